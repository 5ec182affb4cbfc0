"""Where every stage reads and writes, relative to the project root (the paths `dvc.yaml` declares)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from mim.project.state import STATE

PREPARED = Path("data/prepared")
ENCODER_FILE = "encoder.safetensors"
PARAMS_FILE = "params.json"  # the resolved params, beside what they made


def model_dir(recipe: str) -> Path:
    return Path("models") / recipe


def encoder_file(recipe: str) -> Path:
    """`models/<recipe>/encoder.safetensors`, what pre-training exports and evaluation reads."""
    return model_dir(recipe) / ENCODER_FILE


def metrics_file(stage: str, name: str) -> Path:
    return Path("metrics") / stage / f"{name}.json"


def plots_dir(stage: str, name: str) -> Path:
    return Path("plots") / stage / name


def checkpoint_url(name: str, params: BaseModel, salt: str = "") -> str:
    """A checkpoint path keyed by the exact params (and `salt`: the hash of other inputs, e.g. a tokenizer),
    outside DVC's outputs (which DVC deletes before a re-run), so a killed stage resumes where it stopped
    and a stage with other params or inputs never resumes from it."""
    key = hashlib.sha256((params.model_dump_json() + salt).encode()).hexdigest()[:12]
    return str(STATE / "checkpoints" / f"{name}-{key}" / "last.pt")
