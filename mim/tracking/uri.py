"""Where runs go: `MLFLOW_TRACKING_URI`, else the local server `mim up` started, else the project's sqlite file."""

from __future__ import annotations

import os
from pathlib import Path

from mim.project.services import mlflow_url
from mim.project.state import project_dir, state_dir

EXPERIMENT_ENV = "MIM_EXPERIMENT"
DEFAULT_EXPERIMENT = "mim"


def local_store(root: Path | None = None) -> tuple[str, str]:
    """(sqlite URI, artifact root), both absolute, under `<project>/.mim/` (the same files `mim up` serves)."""
    state = state_dir(root)
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state / 'mlflow.db'}", str(state / "mlartifacts")


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return mlflow_url(root or project_dir()) or local_store(root)[0]


def artifact_root(uri: str, root: Path | None = None) -> str | None:
    """The artifact location for a new experiment: explicit for a sqlite store, the server's choice otherwise."""
    if os.environ.get("MIM_ARTIFACT_ROOT"):
        return os.environ["MIM_ARTIFACT_ROOT"]
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return str(db.parent / "mlartifacts")
    return None


def experiment_name() -> str:
    return os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
