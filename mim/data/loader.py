"""Deterministic, resumable batch indices for step-based training over an in-memory data set."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mim.rng import generator_for


class StepBatches:
    """Global batch indices as a pure function of (seed, step), so a resumed run sees the same data.

    Each epoch is a fresh permutation from `generator_for(seed, "epoch", epoch)`; step `s` takes
    batch `s % steps_per_epoch` of epoch `s // steps_per_epoch`.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int, drop_last: bool = True) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if drop_last and global_batch > num_samples:
            raise ValueError(
                f"global_batch {global_batch} is larger than the data set ({num_samples} samples) with "
                "drop_last=True, so an epoch would have no batches; lower the batch size or use more data"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.seed = seed
        self.drop_last = drop_last
        self._cached: tuple[int, Tensor] | None = None  # (epoch, permutation [num_samples] int64)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the data (the last, shorter one is kept unless `drop_last`)."""
        if self.drop_last:
            return self.num_samples // self.global_batch
        return math.ceil(self.num_samples / self.global_batch)

    def epoch(self, step: int) -> int:
        """The epoch that `step` belongs to."""
        return step // self.steps_per_epoch

    def indices(self, step: int) -> Tensor:
        """Sample indices [global_batch] int64 (CPU) of the global batch at `step` (fewer for a kept last batch)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.global_batch
        return self._permutation(epoch)[start : start + self.global_batch].clone()

    @staticmethod
    def rank_slice(indices: Tensor, rank: int, world_size: int) -> Tensor:
        """The contiguous `1 / world_size` share of a global batch that process `rank` trains on."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if len(indices) % world_size != 0:
            raise ValueError(
                f"global batch of {len(indices)} samples is not divisible by world_size {world_size}; "
                "choose a global batch that is a multiple of the number of processes (and drop_last=True)"
            )
        share = len(indices) // world_size
        return indices[rank * share : (rank + 1) * share]

    def _permutation(self, epoch: int) -> Tensor:
        if self._cached is None or self._cached[0] != epoch:
            perm = torch.randperm(self.num_samples, generator=generator_for(self.seed, "epoch", epoch))
            self._cached = (epoch, perm)
        return self._cached[1]
