"""`mim serve`: serve every deployment, `pretrain/<method>` for each method and `pipeline/all`."""

from __future__ import annotations

from prefect import serve

from flows.pipeline import pipeline_flow
from flows.pretrain import pretrain_flow
from mim.params import METHOD_NAMES


def deployments() -> list:
    pretrain = [pretrain_flow.to_deployment(name=m, parameters={"method": m}, tags=["mim", m],
                                            description=f"prepare -> pretrain@{m} -> evaluate@{m} (dvc repro)")
                for m in METHOD_NAMES]
    return [*pretrain, pipeline_flow.to_deployment(name="all", tags=["mim"],
                                                   description="every method, the baseline, then the rest of dvc.yaml")]


def serve_all() -> None:
    """Blocks: runs the flows of these deployments in subprocesses of this process, in the project directory."""
    serve(*deployments())
