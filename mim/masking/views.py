"""Disjoint multi-view masking (DMJD): V masked views of each image whose visible sets do not overlap.

Views are drawn one after another. Each token's count of earlier views it was visible in, plus uniform noise
in [0, 1), is the noise `masking_from_noise` ranks: the tokens seen least often so far become visible first
(ties at random). Visible sets are therefore pairwise disjoint whenever V * K <= N (K visible tokens per view),
and otherwise overlap as little as possible (every token's count stays within one of every other's). Masks can
be drawn on a coarser grid of `unit` x `unit` tokens (DMJD's 32-px units) and expanded to the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mim.masking.checks import MaskCount, check_positive_int, check_ratio
from mim.masking.random import masking_from_noise
from mim.masking.types import TokenMask, token_mask_from_bool


@dataclass(frozen=True)
class MultiViewMask:
    """`views[v]` is view v's TokenMask for the whole batch [B, N]."""

    views: tuple[TokenMask, ...]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiViewMask:
        return MultiViewMask(tuple(v.to(device, non_blocking) for v in self.views))

    def slice(self, start: int, stop: int) -> MultiViewMask:
        return MultiViewMask(tuple(v.slice(start, stop) for v in self.views))

    def stacked(self) -> TokenMask:
        """One TokenMask for the batch repeated V times (view-major: view 0 of every image, then view 1, ...)."""
        cat = lambda name: torch.cat([getattr(v, name) for v in self.views])  # noqa: E731
        return TokenMask(ids_keep=cat("ids_keep"), ids_restore=cat("ids_restore"), mask=cat("mask"))

    def coverage(self) -> Tensor:
        """Fraction of each image's tokens that are a prediction target (masked) in at least one view, [B]."""
        masked_somewhere = torch.stack([v.mask for v in self.views]).amax(dim=0)  # [B, N]
        return masked_somewhere.mean(dim=1)


def expected_coverage(num_tokens: int, num_visible: int, views: int) -> float:
    """What `disjoint_views` guarantees: tokens visible in every view are as few as possible,
    max(0, N - V * (N - K)), and all others are masked somewhere."""
    return 1 - max(0, num_tokens - views * (num_tokens - num_visible)) / num_tokens


def disjoint_views(batch_size: int, grid: tuple[int, int], ratio: float, views: int, generator: torch.Generator,
                   unit: int = 1, count: MaskCount = "round") -> MultiViewMask:
    """V masks per image at `ratio` each, visible sets disjoint as far as V * (1 - ratio) <= 1 allows; drawn on
    `unit` x `unit` blocks of tokens and expanded to `grid`; `count` turns the ratio into a count of blocks."""
    ratio = check_ratio(ratio)
    check_positive_int("views", views)
    check_positive_int("unit", unit)
    if grid[0] % unit or grid[1] % unit:
        raise ValueError(f"mask unit of {unit} tokens does not tile the {grid[0]}x{grid[1]} token grid")
    coarse = (grid[0] // unit, grid[1] // unit)
    n = coarse[0] * coarse[1]
    counts = torch.zeros(batch_size, n, device=generator.device)
    out = []
    for _ in range(views):
        noise = counts + torch.rand(batch_size, n, generator=generator, device=generator.device)
        view = masking_from_noise(noise, ratio, count)
        counts += 1 - view.mask
        out.append(view if unit == 1 else _expand(view.mask, coarse, unit))
    return MultiViewMask(tuple(out))


def _expand(mask: Tensor, coarse: tuple[int, int], unit: int) -> TokenMask:
    m = mask.view(-1, *coarse).repeat_interleave(unit, 1).repeat_interleave(unit, 2)
    return token_mask_from_bool(m.flatten(1).bool())


def per_view(x: Tensor, mask: TokenMask | MultiViewMask) -> Tensor:
    """A per-image tensor [B, ...] repeated once per view of `mask`, [V*B, ...] (as is for a single mask)."""
    if isinstance(mask, MultiViewMask):
        return x.repeat(len(mask.views), *([1] * (x.ndim - 1)))
    return x


def expand_views(images: Tensor, mask: TokenMask | MultiViewMask) -> tuple[Tensor, TokenMask]:
    """(images repeated once per view, the matching stacked mask); a single mask passes through."""
    if isinstance(mask, MultiViewMask):
        return per_view(images, mask), mask.stacked()
    return images, mask
