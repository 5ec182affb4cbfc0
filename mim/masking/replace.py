"""Replacement positions (CCViT): a fixed number of tokens chosen among those a mask leaves visible."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mim.masking.types import TokenMask


def choose_unmasked(mask: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """[B, N] mask (1 = masked) -> [B, N] bool with exactly `count` True per sample, all where mask == 0."""
    visible = int((mask[0] == 0).sum()) if mask.shape[0] else 0
    if not 0 <= count <= visible:
        raise ValueError(f"cannot choose {count} of {visible} unmasked tokens")
    scores = torch.rand(mask.shape, generator=generator, device=generator.device).to(mask.device)
    scores = scores.masked_fill(mask.bool(), 2.0)  # masked tokens sort last
    chosen = scores.argsort(dim=1)[:, :count]  # [B, count]
    return torch.zeros(mask.shape, dtype=torch.bool, device=mask.device).scatter_(1, chosen, True)


@dataclass(frozen=True)
class MaskAndReplace:
    """A token mask plus the visible tokens whose content is replaced (never a masked one)."""

    mask: TokenMask
    replace: Tensor  # [B, N] bool

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskAndReplace:
        return MaskAndReplace(self.mask.to(device, non_blocking), self.replace.to(device, non_blocking=non_blocking))

    def slice(self, start: int, stop: int) -> MaskAndReplace:
        return MaskAndReplace(self.mask.slice(start, stop), self.replace[start:stop])
