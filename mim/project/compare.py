"""`mim compare`: every method's pre-training cost and frozen-encoder accuracy, from the stages' metrics files, as
the mean over the pipeline's seeds (± the half-width of its 95 % t interval when there are several)."""

from __future__ import annotations

from pathlib import Path

from mim.project.graph import pipeline, pipeline_methods
from mim.project.results import baselines, estimate_cell, seed_metrics

__all__ = ["comparison_table", "pipeline_methods"]


def comparison_table(root: Path, methods: list[str]) -> str:
    """Markdown: one row per method (and the baselines): seeds run, pre-training cost and frozen-feature accuracy."""
    pipe = pipeline(root)
    lines = ["| method | seeds | steps | pre-train s | img/s | k-NN top-1 % | linear top-1 % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        t, e = seed_metrics(root, "pretrain", m, pipe.seeds), seed_metrics(root, "evaluate", m, pipe.seeds)
        n = len(set(t) | set(e))
        cost = " | ".join(estimate_cell([x[k] for x in t.values() if k in x], n, 0) if any(k in x for x in t.values())
                          else "-" for k in ("steps", "wall_time_s", "images_per_s")) if t else "- | - | -"
        acc = " | ".join(estimate_cell([x[k] for x in e.values()], n) for k in ("knn_top1", "linear_top1"))
        lines.append(f"| {m} | {n or '-'} | {cost} | {acc} |")
    for b in baselines(root, pipe):
        scores = b["scores"]
        acc = " | ".join(estimate_cell([x[k] for x in scores.values() if k in x]) for k in ("knn_top1", "linear_top1"))
        lines.append(f"| {b['name']} (baseline) | {len(scores)} | - | - | - | {acc} |")
    return "\n".join(lines) + "\n"
