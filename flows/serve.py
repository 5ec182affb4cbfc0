"""`mim serve`: serve every deployment, `pretrain/<recipe>` for each recipe in dvc.yaml and `pipeline/all`."""

from __future__ import annotations

from prefect import serve

from flows.common import project
from flows.pipeline import pipeline_flow
from flows.pretrain import pretrain_flow
from mim.project.graph import pipeline_methods


def deployments() -> list:
    """One `pretrain/<recipe>` per entry of dvc.yaml's methods map (methods and variants like cim-resnet), and
    `pipeline/all`."""
    pretrain = [pretrain_flow.to_deployment(name=m, parameters={"method": m}, tags=["mim", m],
                                            description=f"prepare -> pretrain@{m} -> evaluate@{m} (dvc repro)")
                for m in pipeline_methods(project())]
    return [*pretrain, pipeline_flow.to_deployment(name="all", tags=["mim"],
                                                   description="every method, the baseline, then the rest of dvc.yaml")]


def serve_all() -> None:
    """Blocks: runs the flows of these deployments in subprocesses of this process, in the project directory."""
    serve(*deployments())
