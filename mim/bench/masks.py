"""Mask benchmark: the time each method's corruption takes to draw for one global batch on the host (what the
trainer does before every step), to put next to a model step time (`mim bench pretrain`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from mim.masking import block_masking_ratio, disjoint_views, mixing_map, random_masking, unit_masking


def mask_samplers(batch: int, image_size: int, patch_size: int) -> dict[str, Callable[[torch.Generator], Any]]:
    """{label: draw(generator)} with each method's paper settings on the `image_size / patch_size` grid."""
    side = image_size // patch_size
    grid = (side, side)
    return {
        "mae / img2vec: random 75 %": lambda g: random_masking(batch, side * side, 0.75, g),
        "simmim: 60 % in 32-px units": lambda g: unit_masking(batch, image_size, patch_size, 2 * patch_size, 0.6, g),
        "ccvit / cim: BEiT blocks 40 %": lambda g: block_masking_ratio(batch, grid, 0.4, g, min_block=16),
        "dmjd: 2 disjoint views 60 %": lambda g: disjoint_views(batch, grid, 0.6, 2, g, unit=2),
        "mixmim: one source map 50 %": lambda g: mixing_map((7, 7), 0.5, g),  # MixMIM-B: 7x7 last grid
    }


def bench_masks(batch: int = 2048, image_size: int = 224, patch_size: int = 16, rounds: int = 5,
                step_ms: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Median milliseconds per global batch for every sampler; with `step_ms` (a model's step time, e.g. from
    `mim bench pretrain` on the target GPU), also the share of a step each would take if drawn on the critical
    path."""
    generator = torch.Generator().manual_seed(seed)
    rows = {}
    for label, draw in mask_samplers(batch, image_size, patch_size).items():
        draw(generator)  # warm-up
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            draw(generator)
            times.append((time.perf_counter() - began) * 1e3)
        ms = statistics.median(times)
        rows[label] = {"ms": ms, "share_of_step": ms / step_ms if step_ms else None}
    return {"batch": batch, "grid": image_size // patch_size, "threads": torch.get_num_threads(), "step_ms": step_ms,
            "rows": rows}


def format_masks_bench(result: dict[str, Any]) -> str:
    step = f", model step {result['step_ms']:.1f} ms" if result["step_ms"] else ""
    lines = [f"masks for a global batch of {result['batch']} on a {result['grid']}x{result['grid']} grid, host CPU "
             f"({result['threads']} threads){step}",
             f"{'sampler':<32} {'ms':>8}" + (f" {'of a step':>10}" if result["step_ms"] else "")]
    for label, r in result["rows"].items():
        share = f" {100 * r['share_of_step']:>9.1f}%" if r["share_of_step"] is not None else ""
        lines.append(f"{label:<32} {r['ms']:>8.1f}{share}")
    return "\n".join(lines)
