"""MixMIM's mixing: one source map per batch on the encoder's last grid; sample i takes its masked
positions from its partner, sample B-1-i (`x.flip(0)`). Mixing is its own inverse for a binary map."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mim.masking.checks import check_ratio, count_for_ratio


@dataclass(frozen=True)
class SourceMap:
    """[h, w] long map shared by the whole batch: 1 = the token comes from the partner image."""

    source: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SourceMap:
        return SourceMap(self.source.to(device, non_blocking=non_blocking))

    def slice(self, start: int, stop: int) -> SourceMap:
        """Shared by the batch: every rank's share uses the same map (pairs are formed inside each share)."""
        return self

    @property
    def flat(self) -> Tensor:
        """[N] in row-major token order."""
        return self.source.flatten()


def mixing_map(grid: tuple[int, int], ratio: float, generator: torch.Generator) -> SourceMap:
    """Exactly round(ratio * N) of the grid's N tokens come from the partner, chosen uniformly."""
    ratio = check_ratio(ratio)
    n = grid[0] * grid[1]
    chosen = torch.randperm(n, generator=generator, device=generator.device)[: count_for_ratio(n, ratio)]
    source = torch.zeros(n, dtype=torch.long, device=generator.device)
    source[chosen] = 1
    return SourceMap(source.view(grid).cpu())


def check_pairs(batch_size: int) -> None:
    """Pairs (i, B-1-i) need an even batch: the middle sample of an odd one would be its own partner."""
    if batch_size % 2:
        raise ValueError(f"MixMIM pairs sample i with sample B-1-i, so each process's micro-batch must be even; "
                         f"got {batch_size} (choose train.batch_size divisible by 2 x processes x accum_steps)")


def mix(x: Tensor, source: Tensor) -> Tensor:
    """[B, N, ...] per-token values and an [N] 0/1 map -> sample i with positions source==1 taken from B-1-i."""
    check_pairs(x.shape[0])
    m = source.to(x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    return x * (1 - m) + x.flip(0) * m


def combine_predictions(pred_own: Tensor, pred_partner: Tensor, source: Tensor) -> Tensor:
    """Each image predicted at every position exactly once, from the copy in which that position was hidden:
    image i at source==1 from its own copy (only its source==0 tokens kept), at source==0 from the partner copy
    of sample B-1-i (only source==1 tokens kept there, which are image i's). [B, N, C] each."""
    m = source.to(pred_own.dtype).view(1, -1, 1)
    return pred_own * m + pred_partner.flip(0) * (1 - m)
