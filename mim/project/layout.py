"""Where every stage reads and writes, relative to the project root (the paths `dvc.yaml` declares)."""

from __future__ import annotations

from pathlib import Path

from mim.project.state import STATE

PREPARED = Path("data/prepared")
ENCODER_FILE = "encoder.safetensors"
MODEL_FILE = "model.safetensors"  # the full model (encoder, decoder, heads): `model.init_from`, `mim reconstruct`
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


def checkpoint_url(name: str) -> str:
    """Where stage `name` (`pretrain-mae`, `transfer-scratch`) keeps its training checkpoint: outside DVC's outputs
    (which DVC deletes before a re-run), so a killed stage resumes where it stopped. The checkpoint records what
    made it, and a run made from anything else refuses it (`mim.engine.identity`)."""
    return str(STATE / "checkpoints" / name / "last.pt")


def checkpoint_lock(name: str) -> str:
    """The lock file of stage `name`'s checkpoint folder (beside it: a completed stage removes the folder), held
    while the stage runs so two runs of one stage cannot write one checkpoint (`mim.project.lock`)."""
    return str(STATE / "checkpoints" / f"{name}.lock")
