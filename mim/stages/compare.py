"""`mim compare`: every method's pre-training cost and frozen-encoder accuracy, from the stages' metrics files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mim.stages.graph import pipeline_methods
from mim.stages.layout import metrics_file

__all__ = ["comparison_table", "pipeline_methods", "read_metrics"]


def read_metrics(root: Path, stage: str, name: str) -> dict[str, Any]:
    """`metrics/<stage>/<name>.json` under `root`; {} when the stage has not run."""
    path = root / metrics_file(stage, name)
    return json.loads(path.read_text()) if path.is_file() else {}


def comparison_table(root: Path, methods: list[str]) -> str:
    """Markdown: one row per method (and the baselines): pre-training cost and frozen-feature accuracy."""
    def pct(m: dict, key: str) -> str:
        return f"{m[key]:.2f}" if key in m else "not run"

    lines = ["| method | steps | pre-train s | img/s | k-NN top-1 % | linear top-1 % |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in methods:
        t, e = read_metrics(root, "pretrain", m), read_metrics(root, "evaluate", m)
        cost = f"{t['steps']} | {t['wall_time_s']:.0f} | {t['images_per_s']:.0f}" if t else "- | - | -"
        lines.append(f"| {m} | {cost} | {pct(e, 'knn_top1')} | {pct(e, 'linear_top1')} |")
    for path in sorted((root / metrics_file("evaluate", "x").parent).glob("baseline-*.json")):
        m = json.loads(path.read_text())
        label = f"random-init {path.stem.removeprefix('baseline-')} encoder"
        lines.append(f"| {label} (baseline) | - | - | - | {pct(m, 'knn_top1')} | {pct(m, 'linear_top1')} |")
    if m := read_metrics(root, "evaluate", "pixels"):
        lines.append(f"| raw pixels (baseline) | - | - | - | {pct(m, 'knn_top1')} | {pct(m, 'linear_top1')} |")
    return "\n".join(lines) + "\n"
