"""`mim compare`: every method's pre-training cost and frozen-encoder accuracy, from the stages' metrics files."""

from __future__ import annotations

from pathlib import Path

from mim.project.graph import pipeline_methods
from mim.project.results import baselines, read_metrics

__all__ = ["comparison_table", "pipeline_methods"]


def comparison_table(root: Path, methods: list[str]) -> str:
    """Markdown: one row per method (and the baselines): pre-training cost and frozen-feature accuracy."""
    def pct(m: dict, key: str) -> str:
        return f"{m[key]:.2f}" if key in m else "not run"

    lines = ["| method | steps | pre-train s | img/s | k-NN top-1 % | linear top-1 % |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in methods:
        t, e = read_metrics(root, "pretrain", m), read_metrics(root, "evaluate", m)
        cost = f"{t.get('steps', '-')} | {t['wall_time_s']:.0f} | {t['images_per_s']:.0f}" if t else "- | - | -"
        lines.append(f"| {m} | {cost} | {pct(e, 'knn_top1')} | {pct(e, 'linear_top1')} |")
    lines += [f"| {b['name']} (baseline) | - | - | - | {pct(b, 'knn_top1')} | {pct(b, 'linear_top1')} |"
              for b in baselines(root)]
    return "\n".join(lines) + "\n"
