"""Reading what the stages wrote: metrics files and the baseline rows that `mim compare` and `mim report` show.
A metrics file that exists is checked (a JSON object with its stage's numbers), so a damaged one is an error naming
the file and the stage that rewrites it, never a row shown as "not run" or a crash while plotting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mim.io import DamagedFileError, read_json_object
from mim.project.layout import metrics_file

__all__ = ["baselines", "read_json", "read_metrics"]

# the numbers `mim compare` and `mim report` show: those every file of a stage has, and those some have
REQUIRED = {"pretrain": ("wall_time_s", "images_per_s"), "evaluate": ("knn_top1", "linear_top1")}
NUMBERS = ("steps", "wall_time_s", "images_per_s", "knn_top1", "linear_top1", "finetune_top1", "token_diversity")


def read_json(path: Path, rebuild: str = "re-run the stage that writes it (dvc repro)") -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist (its stage has not run)."""
    return read_json_object(path, rebuild) if path.is_file() else {}


def dvc_stage(stage: str, name: str) -> str:
    """The dvc.yaml stage that writes `metrics/<stage>/<name>.json`."""
    if stage == "evaluate" and name.startswith("baseline-"):
        return f"baseline@{name.removeprefix('baseline-')}"
    if (stage, name) in (("evaluate", "pixels"), ("transfer", "scratch")):
        return name
    return f"{stage}@{name}"


def read_metrics(root: Path, stage: str, name: str) -> dict[str, Any]:
    """`metrics/<stage>/<name>.json` under `root`; {} when the stage has not run. A file that is not a JSON object,
    is empty, lacks its stage's numbers or holds a non-number there is a `DamagedFileError`."""
    path = root / metrics_file(stage, name)
    rebuild = f"re-run `dvc repro {dvc_stage(stage, name)}`"
    metrics = read_json(path, rebuild)
    if not path.is_file():
        return metrics
    if not metrics:
        raise DamagedFileError(f"{path}: empty (no metrics in it); {rebuild}")
    if missing := [k for k in REQUIRED.get(stage, ()) if k not in metrics]:
        raise DamagedFileError(f"{path}: incomplete (no {', '.join(missing)}); {rebuild}")
    for key in NUMBERS:
        value = metrics.get(key)
        if key in metrics and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DamagedFileError(f"{path}: {key} is {value!r}, not a number; {rebuild}")
    return metrics


def baselines(root: Path, scratch_of: str | None = None) -> list[dict[str, Any]]:
    """One row per baseline that has run: each random-init encoder (`baseline@<recipe>`, with the scratch
    fine-tune on the row of `scratch_of`'s architecture), then raw pixels."""
    out = []
    for path in sorted((root / metrics_file("evaluate", "x").parent).glob("baseline-*.json")):
        recipe = path.stem.removeprefix("baseline-")
        row = {"name": f"random-init {recipe} encoder", **read_metrics(root, "evaluate", path.stem)}
        if recipe == scratch_of:
            if "finetune_top1" in (scratch := read_metrics(root, "transfer", "scratch")):
                row["finetune_top1"] = scratch["finetune_top1"]
        out.append(row)
    if pixels := read_metrics(root, "evaluate", "pixels"):
        out.append({"name": "raw pixels", **pixels})
    return out
