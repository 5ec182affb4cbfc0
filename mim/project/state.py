"""The project root and its local state folder `.mim/` (servers, the MLflow store, resumable checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path

STATE = Path(".mim")


def project_dir() -> Path:
    """The project root: `MIM_PROJECT_DIR`, else the working directory."""
    return Path(os.environ.get("MIM_PROJECT_DIR") or os.getcwd()).resolve()


def state_dir(root: Path | None = None) -> Path:
    """`<root>/.mim`, absolute (not created)."""
    return Path(root or project_dir()).resolve() / STATE
