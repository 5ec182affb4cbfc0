"""Training batches streamed from shards by DataLoader workers.

Item k of `ShardSteps` is micro-batch k of the run from its start step: the images of that step's global batch
(`StepBatches`, a function of (seed, step)) that this rank trains on, each decoded and cropped from the full
stored image with the crop boxes the trainer draws for that step. So the batches do not depend on the number of
workers, and a run resumed at step s starts the loader at step s, without replaying the epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mim.data.augment import BatchAugment
from mim.data.loader import StepBatches
from mim.data.shards import ShardSplit
from mim.rng import generator_for

MAX_AUTO_WORKERS = 8


class ShardSteps(Dataset):
    """Micro-batches [m, C, size, size] uint8 (+ `indices`, `flip`, `step`, and `mask` when given a sampler) of
    steps `start`..`stop - 1`."""

    def __init__(self, shards: ShardSplit, batches: StepBatches, augment: BatchAugment, *, seed: int, rank: int,
                 world_size: int, accum_steps: int, start: int, stop: int,
                 sample_masks: Callable[[int, torch.Generator], Any] | None = None) -> None:
        self.shards, self.batches, self.augment, self.seed = shards, batches, augment, seed
        self.sample_masks = sample_masks  # drawn here, in the workers, off the training loop's critical path
        self.rank, self.world_size, self.accum_steps, self.start, self.stop = rank, world_size, accum_steps, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum_steps

    def __getitem__(self, k: int) -> dict[str, Any]:
        step, micro = divmod(k, self.accum_steps)
        return self.micro_batch(self.start + step, micro)

    def micro_batch(self, step: int, micro: int) -> dict[str, Any]:
        """Micro-batch `micro` of this rank at `step`: the crops are those `augment.sample` draws first from
        `generator_for(seed, "step", step)` for the global batch, as the in-memory path draws them."""
        idx = self.batches.indices(step)
        gen = generator_for(self.seed, "step", step)
        crops = self.augment.sample(len(idx), gen)
        masks = self.sample_masks(len(idx), gen) if self.sample_masks is not None else None
        share = len(idx) // self.world_size
        size = share // self.accum_steps
        lo = self.rank * share + micro * size
        sel = idx[lo : lo + size]
        boxes, flips = crops.boxes[lo : lo + size].tolist(), crops.flip[lo : lo + size].tolist()
        size_px, channels = self.augment.out_size, self.shards.channels
        pixels = np.empty((len(sel), size_px, size_px, channels), dtype=np.uint8)  # [m, S, S, C], filled in place
        for row, (i, b, f) in enumerate(zip(sel.tolist(), boxes, flips, strict=True)):
            pixels[row] = self.shards.crop(int(i), tuple(b), size_px, f)
        item = {"images": torch.from_numpy(pixels).permute(0, 3, 1, 2), "indices": sel,  # [m, C, S, S] view
                "flip": crops.flip[lo : lo + size], "step": step}
        if masks is not None:  # the global batch's masks, sliced as the in-memory path slices them
            item["mask"] = masks.slice(lo, lo + size)
        return item


def worker_count(requested: int | str, world_size: int) -> int:
    """`requested`, or (auto) this rank's share of the CPUs, at most 8."""
    if requested != "auto":
        return int(requested)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cpus // max(1, world_size) - 1))


def step_loader(steps: ShardSteps, num_workers: int, pin_memory: bool) -> DataLoader:
    """Micro-batches in order, decoded `num_workers` at a time ahead of training (pinned for non-blocking
    copies to the GPU)."""
    return DataLoader(steps, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=4 if num_workers else None)
