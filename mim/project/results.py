"""Reading what the stages wrote: metrics files and the baseline rows that `mim compare` and `mim report` show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mim.project.layout import metrics_file

__all__ = ["baselines", "read_json", "read_metrics"]


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist (its stage has not run)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def read_metrics(root: Path, stage: str, name: str) -> dict[str, Any]:
    """`metrics/<stage>/<name>.json` under `root`; {} when the stage has not run."""
    return read_json(root / metrics_file(stage, name))


def baselines(root: Path, scratch_of: str | None = None) -> list[dict[str, Any]]:
    """One row per baseline that has run: each random-init encoder (`baseline@<recipe>`, with the scratch
    fine-tune on the row of `scratch_of`'s architecture), then raw pixels."""
    out = []
    for path in sorted((root / metrics_file("evaluate", "x").parent).glob("baseline-*.json")):
        recipe = path.stem.removeprefix("baseline-")
        row = {"name": f"random-init {recipe} encoder", **read_json(path)}
        if recipe == scratch_of:
            if "finetune_top1" in (scratch := read_metrics(root, "transfer", "scratch")):
                row["finetune_top1"] = scratch["finetune_top1"]
        out.append(row)
    if pixels := read_metrics(root, "evaluate", "pixels"):
        out.append({"name": "raw pixels", **pixels})
    return out
