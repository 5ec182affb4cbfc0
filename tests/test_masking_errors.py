"""Bad arguments to `mim.masking`'s mask makers: every error names the value (ratio, size, block bound) at fault."""

from __future__ import annotations

import pytest
import torch

from mim.masking import block_masking, block_masking_ratio, masking_from_noise, random_masking, unit_masking
from mim.rng import generator_for


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_random_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=str(ratio)):
        random_masking(2, 16, ratio, generator_for(0))
    with pytest.raises(ValueError, match=str(ratio)):
        masking_from_noise(torch.rand(2, 16), ratio)


def test_random_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="-1"):
        random_masking(-1, 16, 0.5, generator_for(0))
    with pytest.raises(ValueError, match="num_tokens.*0"):
        random_masking(2, 0, 0.5, generator_for(0))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_masked": 197}, "197"),
        ({"num_masked": -1}, "-1"),
        ({"min_block": 0}, "min_block.*0"),
        ({"min_block": 16, "max_block": 8}, "max_block.*8"),
        ({"min_aspect": 0.0}, "min_aspect=0.0"),
        ({"min_aspect": 2.0, "max_aspect": 1.0}, "max_aspect=1.0"),
        ({"grid": (0, 14)}, "height.*0"),
    ],
)
def test_block_rejects_bad_inputs(kwargs: dict, pattern: str) -> None:
    args = {"grid": (14, 14), "num_masked": 75} | kwargs
    grid, num_masked = args.pop("grid"), args.pop("num_masked")
    with pytest.raises(ValueError, match=pattern):
        block_masking(2, grid, num_masked, generator_for(0), **args)


def test_block_ratio_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match="1.2"):
        block_masking_ratio(2, (14, 14), 1.2, generator_for(0))


@pytest.mark.parametrize(
    ("image_size", "patch_size", "unit", "pattern"),
    [
        (192, 4, 30, "mask_unit_size=30.*patch_size=4"),
        (192, 16, 8, "mask_unit_size=8.*patch_size=16"),
        (200, 4, 32, "mask_unit_size=32.*image_size=200"),
    ],
)
def test_unit_rejects_incompatible_sizes(image_size: int, patch_size: int, unit: int, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        unit_masking(2, image_size, patch_size, unit, 0.5, generator_for(0))


def test_unit_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match="-0.5"):
        unit_masking(2, 192, 4, 32, -0.5, generator_for(0))
