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

    masks = np.zeros((batch_size, height, width), dtype=bool)  # [B, H, W], True = masked
    for sample in masks:
        count = 0
        while True:
            upper = min(max_block, num_masked - count)
            if upper == 0:
                break
            added = _place_block(sample, generator, min_block, upper, log_aspect)
            if added == 0:
                break
            count += added
        _fill_random_cells(sample, num_masked - count, generator)

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


def _place_block(
    mask: np.ndarray,
    generator: torch.Generator,
    min_area: int,
    max_area: int,
    log_aspect: tuple[float, float],
) -> int:
    """Try to mask one block inside `mask` [H, W] in place; return the number of newly masked cells (0 = none fit)."""
    height, width = mask.shape
    for _ in range(_ATTEMPTS_PER_BLOCK):
        # one draw per attempt: area, log-aspect, top, left
        u_area, u_aspect, u_top, u_left = torch.rand(4, generator=generator, device=generator.device).tolist()
        area = min_area + u_area * (max_area - min_area)
        aspect = math.exp(log_aspect[0] + u_aspect * (log_aspect[1] - log_aspect[0]))
        block_h = max(1, int(round(math.sqrt(area * aspect))))
        block_w = max(1, int(round(math.sqrt(area / aspect))))
        if block_h > height or block_w > width:
            continue
        top = min(int(u_top * (height - block_h + 1)), height - block_h)
        left = min(int(u_left * (width - block_w + 1)), width - block_w)
        window = mask[top : top + block_h, left : left + block_w]  # view into mask
        added = block_h * block_w - int(window.sum())
        if 0 < added <= max_area:
            window[...] = True
            return added
    return 0


def _fill_random_cells(mask: np.ndarray, missing: int, generator: torch.Generator) -> None:
    """Mask `missing` uniformly chosen unmasked cells of `mask` [H, W] in place."""
    if missing <= 0:
        return
    flat = mask.reshape(-1)  # [N] view
    scores = torch.rand(flat.size, generator=generator, device=generator.device).cpu().numpy()  # [N]
    scores[flat] = np.inf  # already masked cells are never picked
    flat[np.argsort(scores, kind="stable")[:missing]] = True
