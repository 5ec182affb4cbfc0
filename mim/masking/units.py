"""SimMIM unit masking: random square units of `mask_unit_size` pixels, tiled onto the token grid.

SimMIM masks coarse units (e.g. 32 px) even when tokens are finer (e.g. 4 px Swin patches), so a
masked region cannot be trivially inpainted from adjacent visible pixels.
"""

from __future__ import annotations

import torch

from mim.masking.checks import check_batch_size, check_positive_int, check_ratio, count_for_ratio
from mim.masking.types import TokenMask, token_mask_from_bool


def unit_masking(
    batch_size: int,
    image_size: int,
    patch_size: int,
    mask_unit_size: int,
    ratio: float,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> TokenMask:
    """Mask exactly `int(units * ratio + 0.5)` random units per sample and expand them to tokens.

    SimMIM itself uses `ceil(units * ratio)`; the two agree for its settings (e.g. 36 units at 0.6
    gives 22 both ways) and differ only when the fractional part of `units * ratio` is in (0, 0.5).

    Args:
        batch_size: Number of samples B.
        image_size: Square image side in pixels.
        patch_size: Token patch side in pixels; the token grid is `image_size / patch_size` per side.
        mask_unit_size: Mask unit side in pixels; a multiple of `patch_size` that divides `image_size`.
        ratio: Fraction of units to mask, in [0, 1].
        generator: Source of the unit permutation (argsort of uniform noise).
        device: Where the returned tensors live; defaults to `generator.device`.

    Returns:
        A `TokenMask` over the row-major token grid, constant within each unit, visible ids ascending.
    """
    check_batch_size(batch_size)
    check_positive_int("image_size", image_size)
    check_positive_int("patch_size", patch_size)
    check_positive_int("mask_unit_size", mask_unit_size)
    ratio = check_ratio(ratio, allow_one=True)
    if mask_unit_size % patch_size != 0:
        raise ValueError(f"mask_unit_size={mask_unit_size} must be a multiple of patch_size={patch_size}")
    if image_size % mask_unit_size != 0:
        raise ValueError(f"mask_unit_size={mask_unit_size} must divide image_size={image_size}")

    units_per_side = image_size // mask_unit_size
    num_units = units_per_side * units_per_side
    scale = mask_unit_size // patch_size  # tokens per unit side
    num_masked_units = count_for_ratio(num_units, ratio)

    noise = torch.rand(batch_size, num_units, generator=generator, device=generator.device)  # [B, U]
    ids = torch.argsort(noise, dim=1)[:, :num_masked_units]  # [B, M] masked units
    unit_mask = torch.zeros(batch_size, num_units, dtype=torch.bool, device=noise.device)  # [B, U]
    unit_mask.scatter_(1, ids, True)
    grid = unit_mask.view(batch_size, units_per_side, units_per_side)  # [B, u, u]
    grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)  # [B, G, G], G = u * scale
    token_mask = token_mask_from_bool(grid.reshape(batch_size, -1))  # [B, G * G]
    return token_mask if device is None else token_mask.to(device)


def picture_masking(batch_size: int, grid: tuple[int, int], unit: int, ratio: float,
                    generator: torch.Generator) -> TokenMask:
    """The mask pictures show, shared by methods so their grids compare: one uniform noise value per `unit` x
    `unit` block of tokens, the `int(units * ratio + 0.5)` blocks with the largest noise masked (MAE's rule).

    The same generator state gives the same mask to every method with the same grid, unit and ratio (with
    `unit` 1 it is `random_masking`'s mask), and a higher ratio masks a superset of a lower one's blocks.

    Args:
        batch_size: Number of samples B.
        grid: (rows, cols) of the token grid; both multiples of `unit`.
        unit: Mask unit side in tokens (SimMIM's `mask_unit_size / patch_size`, DMJD's `unit`, 1 for MAE).
        ratio: Fraction of units to mask, in [0, 1).
        generator: Source of the noise.

    Returns:
        A `TokenMask` over the row-major token grid on `generator.device`, visible ids ascending.
    """
    check_batch_size(batch_size)
    check_positive_int("unit", unit)
    ratio = check_ratio(ratio)
    rows, cols = grid
    if rows % unit or cols % unit:
        raise ValueError(f"mask unit of {unit} tokens does not tile the {rows}x{cols} token grid")
    num_units = (rows // unit) * (cols // unit)
    noise = torch.rand(batch_size, num_units, generator=generator, device=generator.device)  # [B, U]
    ids = torch.argsort(noise, dim=1, descending=True)[:, : count_for_ratio(num_units, ratio)]  # largest masked
    unit_mask = torch.zeros(batch_size, num_units, dtype=torch.bool, device=noise.device).scatter_(1, ids, True)
    blocks = unit_mask.view(batch_size, rows // unit, cols // unit)
    blocks = blocks.repeat_interleave(unit, dim=1).repeat_interleave(unit, dim=2)  # [B, rows, cols]
    return token_mask_from_bool(blocks.reshape(batch_size, -1))
