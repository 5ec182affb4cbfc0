"""`mim serve`: serve every deployment, `pretrain/<recipe>` for each recipe in dvc.yaml and `pipeline/all`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve

from flows.common import project
from flows.pipeline import pipeline_flow
from flows.pretrain import pretrain_flow
from mim.project.graph import pipeline_methods

FLOWS = {"pretrain": pretrain_flow, "pipeline": pipeline_flow}


def deployment_specs(root: Path) -> list[dict[str, Any]]:
    """One `pretrain/<recipe>` per recipe of params/pipeline.yaml (methods and variants like cim-resnet), and
    `pipeline/all`: what `mim serve` serves and `python -m flows.deploy` registers on a work pool."""
    pretrain = [{"flow": "pretrain", "name": m, "parameters": {"method": m}, "tags": ["mim", m],
                 "description": f"prepare -> pretrain@{m}-<seed> -> evaluate@{m}-<seed> for every seed (dvc repro)"}
                for m in pipeline_methods(root)]
    return [*pretrain, {"flow": "pipeline", "name": "all", "parameters": {}, "tags": ["mim"],
                        "description": "every method, the baseline, then the rest of dvc.yaml"}]


def deployments() -> list:
    """The deployments `mim serve` runs in this process."""
    return [FLOWS[s["flow"]].to_deployment(name=s["name"], parameters=s["parameters"] or None, tags=s["tags"],
                                           description=s["description"]) for s in deployment_specs(project())]


def take_over(names: list[str]) -> list[str]:
    """Delete the deployments of these names that `mim deploy` put on a work pool: `serve` would update them in place,
    keeping the pool's flow storage, and every run it picked would crash loading the flow. Returns lines to print."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    lines = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                old = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if old.work_pool_name or old.storage_document_id:
                client.delete_deployment(old.id)
                lines.append(f"{name} was deployed on work pool {old.work_pool_name!r}; it is served here now "
                             f"(`mim deploy --pool {old.work_pool_name}` gives it back)")
    return lines


def serve_all() -> None:
    """Blocks: runs the flows of these deployments in subprocesses of this process, in the project directory."""
    served = deployments()
    for line in take_over([f"{d.flow_name}/{d.name}" for d in served]):
        print(f"mim serve: {line}", flush=True)
    serve(*served)
