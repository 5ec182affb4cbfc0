"""Where every stage reads and writes, relative to the project root (the paths `dvc.yaml` declares)."""

from __future__ import annotations

from pathlib import Path

from mim.project.state import STATE

PREPARED = Path("data/prepared")
ENCODER_FILE = "encoder.safetensors"
MODEL_FILE = "model.safetensors"  # the full model (encoder, decoder, heads): `model.init_from`, `mim reconstruct`
PARAMS_FILE = "params.json"  # the resolved params, beside what they made
PIPELINE_PARAMS = Path("params/pipeline.yaml")  # the recipes, baselines and seeds (dvc.yaml's `vars`)


def seed_name(seed: int) -> str:
    """`seed-<s>`: the folder (or file stem) of one seed's outputs under a recipe's."""
    return f"seed-{seed}"


def model_dir(recipe: str, seed: int | None = None) -> Path:
    """`models/<recipe>/seed-<s>/` for a pipeline recipe; `models/<name>/` for a shared input (tokenizer, teacher)."""
    base = Path("models") / recipe
    return base if seed is None else base / seed_name(seed)


def encoder_file(recipe: str, seed: int | None = None) -> Path:
    """`models/<recipe>/seed-<s>/encoder.safetensors`, what pre-training exports and evaluation reads."""
    return model_dir(recipe, seed) / ENCODER_FILE


def metrics_file(stage: str, name: str, seed: int | None = None) -> Path:
    """`metrics/<stage>/<name>/seed-<s>.json` for a per-seed stage, `metrics/<stage>/<name>.json` otherwise."""
    base = Path("metrics") / stage / name
    return base.with_suffix(".json") if seed is None else base / f"{seed_name(seed)}.json"


def plots_dir(stage: str, name: str, seed: int | None = None) -> Path:
    """`plots/<stage>/<name>/seed-<s>` (a folder, or a file stem with a suffix added) for a per-seed stage."""
    base = Path("plots") / stage / name
    return base if seed is None else base / seed_name(seed)


def stage_name(stage: str, name: str, seed: int | None = None) -> str:
    """The dvc.yaml stage name: `pretrain@mae-0` (a matrix stage of recipe and seed), `scratch@0`, `pixels`."""
    if seed is None:
        return name if stage == name else f"{stage}@{name}"
    return f"{stage}@{seed}" if stage == name else f"{stage}@{name}-{seed}"


def checkpoint_name(stage: str, name: str, seed: int) -> str:
    """`pretrain-mae-seed-0`, `transfer-scratch-seed-1`: a per-seed stage's checkpoint folder (and lock) name."""
    return f"{stage}-{name}-{seed_name(seed)}"


def checkpoint_url(name: str) -> str:
    """Where stage `name` (`pretrain-mae-seed-0`, `transfer-scratch-seed-0`) keeps its training checkpoint: outside
    DVC's outputs (which DVC deletes before a re-run), so a killed stage resumes where it stopped. The checkpoint
    records what made it, and a run made from anything else refuses it (`mim.engine.identity`)."""
    return str(STATE / "checkpoints" / name / "last.pt")


def checkpoint_lock(name: str) -> str:
    """The lock file of stage `name`'s checkpoint folder (beside it: a completed stage removes the folder), held
    while the stage runs so two runs of one stage cannot write one checkpoint (`mim.project.lock`)."""
    return str(STATE / "checkpoints" / f"{name}.lock")
