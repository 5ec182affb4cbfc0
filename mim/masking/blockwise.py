"""BEiT block-wise masking: masked tokens come in rectangular blocks rather than scattered cells.

Blocks make the task harder than random masking (neighbours of a masked token are often masked
too), which is what BEiT-style tokenizer targets need. Unlike the original BEiT generator, every
sample here has exactly the requested number of masked tokens: when no further block fits, the
remainder is filled with random single cells.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mim.masking.checks import check_batch_size, check_positive_int, check_ratio, count_for_ratio
from mim.masking.types import TokenMask, token_mask_from_bool

_ATTEMPTS_PER_BLOCK = 10


def block_masking(
    batch_size: int,
    grid: tuple[int, int],
    num_masked: int,
    generator: torch.Generator,
    *,
    min_block: int = 16,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    device: torch.device | str | None = None,
) -> TokenMask:
    """Draw BEiT block-wise masks with exactly `num_masked` masked tokens per sample.

    Per sample, blocks are placed with area uniform between `min_block` and
    `min(max_block, remaining)`, aspect ratio log-uniform in `[min_aspect, max_aspect]` and a
    uniform top-left corner; only newly masked cells count. A block adding no cell or more than
    `min(max_block, remaining)` cells is redrawn (up to 10 times). As in BEiT, blocks are still
    tried once `remaining < min_block` (area then between `remaining` and `min_block`), so the last
    ones mostly overlap earlier blocks. When no block fits, the missing count is filled with
    uniformly random unmasked cells.

    Args:
        batch_size: Number of samples B.
        grid: Token grid (height, width); tokens are numbered row-major, N = height * width.
        num_masked: Masked tokens per sample, in [0, N].
        generator: Source of every random draw (CPU generators are fastest: the loop is on the host).
        min_block: Smallest block area in tokens.
        max_block: Largest block area; defaults to `max(num_masked, min_block)`.
        min_aspect: Smallest height/width ratio of a block.
        max_aspect: Largest height/width ratio; defaults to `1 / min_aspect`.
        device: Where the returned tensors live; defaults to `generator.device`.

    Returns:
        A `TokenMask` with visible ids ascending (see `token_mask_from_bool`).
    """
    check_batch_size(batch_size)
    height, width = _check_grid(grid)
    total = height * width
    if isinstance(num_masked, bool) or not isinstance(num_masked, int) or not 0 <= num_masked <= total:
        raise ValueError(f"num_masked must be an int in [0, {total}] for grid {height}x{width}, got {num_masked!r}")
    check_positive_int("min_block", min_block)
    if max_block is None:
        max_block = max(num_masked, min_block)
    elif isinstance(max_block, bool) or not isinstance(max_block, int) or max_block < min_block:
        raise ValueError(f"max_block must be an int >= min_block={min_block}, got {max_block!r}")
    max_aspect = 1.0 / min_aspect if max_aspect is None and min_aspect > 0 else max_aspect
    if not (min_aspect > 0 and max_aspect is not None and max_aspect >= min_aspect):
        raise ValueError(f"need 0 < min_aspect <= max_aspect, got min_aspect={min_aspect!r}, max_aspect={max_aspect!r}")
    log_aspect = (math.log(min_aspect), math.log(max_aspect))

    masks = _block_masks(batch_size, height, width, num_masked, max_block, min_block, log_aspect, generator)
    bool_mask = torch.from_numpy(masks.reshape(batch_size, total))  # [B, N]
    token_mask = token_mask_from_bool(bool_mask)
    return token_mask.to(generator.device if device is None else device)


def block_masking_ratio(
    batch_size: int,
    grid: tuple[int, int],
    ratio: float,
    generator: torch.Generator,
    **kwargs,
) -> TokenMask:
    """`block_masking` with `num_masked = int(height * width * ratio + 0.5)`; `ratio` in [0, 1]."""
    height, width = _check_grid(grid)
    ratio = check_ratio(ratio, allow_one=True)
    return block_masking(batch_size, grid, count_for_ratio(height * width, ratio), generator, **kwargs)


def _check_grid(grid: tuple[int, int]) -> tuple[int, int]:
    if len(grid) != 2:
        raise ValueError(f"grid must be (height, width), got {grid!r}")
    height, width = grid
    check_positive_int("grid height", height)
    check_positive_int("grid width", width)
    return height, width


def _block_masks(batch: int, height: int, width: int, num_masked: int, max_block: int, min_block: int,
                 log_aspect: tuple[float, float], generator: torch.Generator) -> np.ndarray:
    """[B, H, W] bool masks, every sample at once: each round tries (up to 10 draws) to add one block to every
    sample that still needs cells; a sample whose draws all fail stops placing blocks. The rest is filled with
    random unmasked cells. Vectorized over the batch, so 2048 masks cost about as much as a few."""
    masks = np.zeros((batch, height, width), dtype=bool)  # True = masked
    count = np.zeros(batch, dtype=np.int64)
    placing = np.ones(batch, dtype=bool)
    rows, cols = np.arange(height)[None, :], np.arange(width)[None, :]
    while placing.any():
        upper = np.minimum(max_block, num_masked - count)  # [B] largest block a sample may still take
        placing &= upper > 0
        placed = np.zeros(batch, dtype=bool)
        for _ in range(_ATTEMPTS_PER_BLOCK):
            trying = placing & ~placed
            if not trying.any():
                break
            u = torch.rand(batch, 4, generator=generator, device=generator.device).cpu().double().numpy()  # [B, 4]
            idx = np.flatnonzero(trying)  # only the samples still looking for a block this round
            u, up = u[idx], upper[idx]
            area = min_block + u[:, 0] * (up - min_block)
            aspect = np.exp(log_aspect[0] + u[:, 1] * (log_aspect[1] - log_aspect[0]))
            bh = np.maximum(1, np.rint(np.sqrt(area * aspect))).astype(np.int64)
            bw = np.maximum(1, np.rint(np.sqrt(area / aspect))).astype(np.int64)
            fits = (bh <= height) & (bw <= width)
            top = np.minimum((u[:, 2] * (height - bh + 1)).astype(np.int64), height - bh)
            left = np.minimum((u[:, 3] * (width - bw + 1)).astype(np.int64), width - bw)
            window = (((rows >= top[:, None]) & (rows < (top + bh)[:, None]))[:, :, None]
                      & ((cols >= left[:, None]) & (cols < (left + bw)[:, None]))[:, None, :])  # [b, H, W]
            added = (window & ~masks[idx]).sum(axis=(1, 2))
            accept = fits & (added > 0) & (added <= up)
            chosen = idx[accept]
            masks[chosen] |= window[accept]
            count[chosen] += added[accept]
            placed[chosen] = True
        placing &= placed
    missing = num_masked - count  # [B] cells no block could add
    if missing.any():
        flat = masks.reshape(batch, -1)  # [B, N] view
        scores = torch.rand(flat.shape, generator=generator, device=generator.device).cpu().numpy()
        scores[flat] = np.inf  # masked cells are never picked
        rank = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")  # [B, N]
        flat |= rank < missing[:, None]
    return masks
