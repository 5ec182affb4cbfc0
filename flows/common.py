"""What both flows share: the project they act on, the parent MLflow run, metrics files, params edits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.runtime import deployment, flow_run

from mim.analysis.stats import mean_interval
from mim.project.graph import pipeline, pipeline_methods
from mim.project.results import seed_metrics
from mim.project.state import project_dir
from mim.tracking import StageRun
from mim.tracking import flow_run as mlflow_flow_run
from tasks import project_lock, set_params

EVAL_KEYS = ("knn_top1", "linear_top1")


def project() -> Path:
    """The DVC project the flow acts on: `MIM_PROJECT_DIR`, else the working directory (where `mim serve` ran)."""
    root = project_dir()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml; run `mim serve` from the project or set MIM_PROJECT_DIR")
    return root


def check_methods(root: Path, methods: list[str]) -> list[str]:
    """`methods` when each is in params/pipeline.yaml's methods; else ValueError naming the unknown ones and the
    known."""
    known = pipeline_methods(root)
    if unknown := [m for m in methods if m not in known]:
        raise ValueError(f"unknown method{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                         f"params/pipeline.yaml's methods are {', '.join(known)}")
    return methods


def mean_scores(root: Path, stage: str, method: str, keys: tuple[str, ...]) -> dict[str, float]:
    """{key: mean over the pipeline's seeds} of `method`'s `stage` metrics that have run (keys some seed has)."""
    runs = seed_metrics(root, stage, method, pipeline(root).seeds).values()
    return {k: mean_interval(v).mean for k in keys if (v := [m[k] for m in runs if k in m])}


@contextmanager
def flow_context(name: str) -> Iterator[tuple[Path, StageRun]]:
    """Lock the project (one DVC user at a time) and open the flow's parent MLflow run."""
    root = project()
    tags = {"mim.flow": name, "prefect.flow_run_id": str(flow_run.id or ""),
            "prefect.flow_run_name": str(flow_run.name or ""), "prefect.deployment": str(deployment.name or "")}
    with project_lock(root), mlflow_flow_run(name, tags) as parent:
        yield root, parent


def edit_params(root: Path, methods: list[str], *, epochs: float | None = None, steps: int | None = None,
                base_lr: float | None = None, batch_size: int | None = None, subset: int | None = None) -> list[str]:
    """Write the flow's overrides into the params files (None = leave as is), every file or none (a value one
    file refuses leaves all unchanged); returns the changed keys (`file.key`)."""
    updates: dict[str, dict] = {"data": {"subset": subset}} if subset is not None else {}
    recipe = {"train.epochs": epochs, "train.steps": steps, "optim.base_lr": base_lr, "train.batch_size": batch_size}
    for method in methods:
        updates[method] = {k: v for k, v in recipe.items() if v is not None}
        if epochs is not None and steps is None:
            updates[method]["train.steps"] = None  # epochs asked for: a step count in the file must not override them
    return set_params(str(root), updates)
