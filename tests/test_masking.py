"""Tests for `mim.masking`: exact counts, determinism, index consistency and mask structure (bad arguments:
test_masking_errors.py)."""

from __future__ import annotations

import pytest
import torch

from mim.masking import (
    TokenMask,
    block_masking,
    block_masking_ratio,
    count_for_ratio,
    gather_tokens,
    masked_mean,
    masking_from_noise,
    random_masking,
    restore_tokens,
    token_mask_from_bool,
    unit_masking,
)
from mim.rng import generator_for

BATCH = 8


def _random(seed: int, num_tokens: int = 196, ratio: float = 0.75) -> TokenMask:
    return random_masking(BATCH, num_tokens, ratio, generator_for(seed, "random"))


def _block(seed: int, grid: tuple[int, int] = (14, 14), num_masked: int = 75) -> TokenMask:
    return block_masking(BATCH, grid, num_masked, generator_for(seed, "block"))


def _unit(seed: int, ratio: float = 0.6) -> TokenMask:
    return unit_masking(BATCH, 192, 4, 32, ratio, generator_for(seed, "unit"))


MAKERS = {"random": _random, "block": _block, "unit": _unit}


def _check_consistent(tm: TokenMask) -> None:
    """ids_keep, ids_restore and mask describe the same partition of the tokens."""
    batch, num_tokens = tm.mask.shape
    assert tm.ids_keep.dtype == torch.long and tm.ids_restore.dtype == torch.long
    assert tm.mask.dtype == torch.float32
    assert tm.ids_keep.shape == (batch, tm.num_visible)
    assert tm.num_visible + tm.num_masked == num_tokens
    # ids_restore is a permutation of 0..N-1 on every row
    expected = torch.arange(num_tokens).expand(batch, -1)
    assert torch.equal(tm.ids_restore.sort(dim=1).values, expected)
    # mask is 0 exactly at ids_keep
    visible = torch.zeros(batch, num_tokens, dtype=torch.bool).scatter_(1, tm.ids_keep, True)
    assert torch.equal(~visible, tm.bool_mask)
    assert set(tm.mask.unique().tolist()) <= {0.0, 1.0}
    # a token is visible iff its restore position is among the first K
    assert torch.equal(tm.ids_restore >= tm.num_visible, tm.bool_mask)


def _check_round_trip(tm: TokenMask, dim: int = 3) -> None:
    """restore(gather(x, ids_keep), fill = gathered masked tokens) == x."""
    x = torch.randn(tm.batch_size, tm.num_tokens, dim, generator=generator_for(0, "x"))
    visible = gather_tokens(x, tm.ids_keep)  # [B, K, D]
    masked = gather_tokens(x, tm.ids_masked)  # [B, N - K, D]
    assert torch.equal(restore_tokens(visible, tm.ids_restore, fill=masked), x)


# ----------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("num_tokens", [4, 49, 64, 196])
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.6, 0.75, 0.9])
def test_random_counts_shapes_and_consistency(num_tokens: int, ratio: float) -> None:
    tm = random_masking(BATCH, num_tokens, ratio, generator_for(3, num_tokens, str(ratio)))
    expected = int(num_tokens * ratio + 0.5)
    assert tm.mask.shape == (BATCH, num_tokens)
    assert tm.num_masked == expected
    assert tm.mask.sum(dim=1).tolist() == [float(expected)] * BATCH
    _check_consistent(tm)
    _check_round_trip(tm)


@pytest.mark.parametrize(
    ("grid", "num_masked"),
    [((14, 14), 75), ((14, 14), 0), ((14, 14), 5), ((14, 14), 98), ((14, 14), 196), ((8, 8), 40), ((7, 12), 30)],
)
def test_block_counts_shapes_and_consistency(grid: tuple[int, int], num_masked: int) -> None:
    tm = block_masking(BATCH, grid, num_masked, generator_for(4, *grid, num_masked))
    assert tm.mask.shape == (BATCH, grid[0] * grid[1])
    assert tm.mask.sum(dim=1).tolist() == [float(num_masked)] * BATCH
    _check_consistent(tm)
    _check_round_trip(tm)


@pytest.mark.parametrize("ratio", [0.0, 0.4, 0.5, 0.6, 0.75, 1.0])
def test_block_ratio_counts(ratio: float) -> None:
    tm = block_masking_ratio(BATCH, (14, 14), ratio, generator_for(5, str(ratio)), min_block=8, max_block=40)
    assert tm.mask.sum(dim=1).tolist() == [float(int(196 * ratio + 0.5))] * BATCH
    _check_consistent(tm)


@pytest.mark.parametrize(
    ("image_size", "patch_size", "unit", "ratio"),
    [(192, 4, 32, 0.6), (224, 16, 32, 0.75), (224, 16, 16, 0.5), (32, 4, 8, 0.4), (64, 8, 64, 1.0)],
)
def test_unit_counts_and_constant_within_units(image_size: int, patch_size: int, unit: int, ratio: float) -> None:
    tm = unit_masking(BATCH, image_size, patch_size, unit, ratio, generator_for(6, image_size, unit, str(ratio)))
    grid, scale, per_side = image_size // patch_size, unit // patch_size, image_size // unit
    masked_units = int(per_side * per_side * ratio + 0.5)
    assert tm.mask.shape == (BATCH, grid * grid)
    assert tm.mask.sum(dim=1).tolist() == [float(masked_units * scale * scale)] * BATCH
    _check_consistent(tm)
    _check_round_trip(tm)
    # row-major token grid -> [B, u, s, u, s]; constant over each unit's s x s tokens
    units = tm.mask.view(BATCH, per_side, scale, per_side, scale)
    assert torch.equal(units.amax(dim=(2, 4)), units.amin(dim=(2, 4)))
    assert units.amax(dim=(2, 4)).sum(dim=(1, 2)).tolist() == [float(masked_units)] * BATCH


def test_unit_masking_simmim_example_token_order() -> None:
    """Image 8 px, patch 2, unit 4: unit (r, c) covers tokens rows 2r..2r+1, cols 2c..2c+1 of a 4x4 grid."""
    tm = unit_masking(64, 8, 2, 4, 0.25, generator_for(7, "order"))
    grid = tm.mask.view(64, 4, 4)
    for sample in grid:
        blocks = [sample[2 * r : 2 * r + 2, 2 * c : 2 * c + 2] for r in range(2) for c in range(2)]
        full = [bool(b.all()) for b in blocks]
        assert sum(full) == 1
        assert sample.sum() == 4


# ----------------------------------------------------------------------------- determinism and devices


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_same_seed_same_mask_different_seed_different_mask(kind: str) -> None:
    make = MAKERS[kind]
    first, again, other = make(11), make(11), make(12)
    for name in ("ids_keep", "ids_restore", "mask"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.mask, other.mask)
    # samples within a batch differ too
    assert not torch.equal(first.mask[0], first.mask[1])


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_masking_leaves_global_rng_alone(kind: str) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MAKERS[kind](0)
    assert torch.equal(torch.rand(3), expected)


def test_device_argument_and_to() -> None:
    tm = random_masking(2, 16, 0.5, generator_for(0), device="cpu")
    assert tm.mask.device.type == "cpu"
    moved = tm.to("cpu")
    assert moved is not tm and torch.equal(moved.ids_restore, tm.ids_restore)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_gives_cuda_masks() -> None:
    gen = generator_for(0, device="cuda")
    for tm in (
        random_masking(2, 16, 0.5, gen),
        block_masking(2, (4, 4), 6, gen, min_block=2),
        unit_masking(2, 16, 2, 4, 0.5, gen),
    ):
        assert tm.mask.device.type == "cuda" and tm.ids_keep.device.type == "cuda"
        _check_consistent(tm.to("cpu"))


# ----------------------------------------------------------------------------- masking_from_noise


def test_masking_from_noise_hand_computed() -> None:
    noise = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.8, 0.6, 0.4, 0.2]])
    tm = masking_from_noise(noise, 0.5)
    # row 0: ids_shuffle = [1, 3, 0, 2] -> keep tokens 1, 3; row 1: ids_shuffle = [3, 2, 1, 0]
    assert torch.equal(tm.ids_keep, torch.tensor([[1, 3], [3, 2]]))
    assert torch.equal(tm.ids_restore, torch.tensor([[2, 0, 3, 1], [3, 2, 1, 0]]))
    assert torch.equal(tm.mask, torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(tm.ids_masked, torch.tensor([[0, 2], [1, 0]]))


def test_masking_from_noise_rounds_half_up() -> None:
    noise = torch.tensor([[0.2, 0.4, 0.6, 0.8]])
    # 4 * 0.25 = 1 masked (largest noise); 4 * 0.125 = 0.5 rounds up to 1; 4 * 0.1 = 0.4 rounds to 0
    for ratio, expected in [(0.25, [0.0, 0.0, 0.0, 1.0]), (0.125, [0.0, 0.0, 0.0, 1.0]), (0.1, [0.0] * 4)]:
        tm = masking_from_noise(noise, ratio)
        assert tm.mask.tolist() == [expected]
        assert torch.equal(tm.ids_restore, torch.tensor([[0, 1, 2, 3]]))


@pytest.mark.parametrize(("num_tokens", "ratio"), [(64, 0.75), (196, 0.75), (49, 0.75), (196, 0.6), (196, 0.5)])
def test_count_agrees_with_huggingface_formula(num_tokens: int, ratio: float) -> None:
    hf_len_keep = int(num_tokens * (1 - ratio))
    assert masking_from_noise(torch.rand(1, num_tokens), ratio).num_visible == hf_len_keep


@pytest.mark.parametrize(("num_tokens", "ratio", "official", "rounded"),
                         [(64, 0.6, 39, 38), (49, 0.6, 30, 29), (196, 0.4, 79, 78), (36, 0.4, 15, 14), (10, 0.9, 10, 9),
                          (49, 0.75, 37, 37), (196, 0.75, 147, 147)])
def test_official_count_keeps_int_n_times_one_minus_ratio_and_round_rounds_half_up(num_tokens, ratio, official,
                                                                                    rounded) -> None:
    # official = MAE's / transformers' len_keep = int(N * (1 - r)): the masked count rounds up where N * r has a
    # fractional part in (0, 0.5), and float error floors it to "everything" at N = 10, r = 0.9 (int(0.999..) = 0)
    assert num_tokens - int(num_tokens * (1 - ratio)) == official  # the formula itself, written out
    assert count_for_ratio(num_tokens, ratio, "official") == official
    assert count_for_ratio(num_tokens, ratio, "round") == count_for_ratio(num_tokens, ratio) == rounded
    noise = torch.rand(2, num_tokens, generator=torch.Generator().manual_seed(0))
    assert masking_from_noise(noise, ratio, "official").num_masked == official
    assert masking_from_noise(noise, ratio, "round").num_masked == rounded
    assert random_masking(2, num_tokens, ratio, generator_for(0), count="official").num_masked == official
    with pytest.raises(ValueError, match="mask count rule must be one of official, round, got 'floor'"):
        count_for_ratio(num_tokens, ratio, "floor")


# ----------------------------------------------------------------------------- block structure


def _component_sizes(grid: torch.Tensor) -> list[int]:
    """Sizes of 4-connected components of True cells of a [H, W] bool grid."""
    height, width = grid.shape
    cells = {(r, c) for r in range(height) for c in range(width) if grid[r, c]}
    sizes = []
    while cells:
        stack, size = [cells.pop()], 0
        while stack:
            r, c = stack.pop()
            size += 1
            for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if nb in cells:
                    cells.remove(nb)
                    stack.append(nb)
        sizes.append(size)
    return sizes


def test_block_masks_are_blocky() -> None:
    grid, num_masked, batch = (14, 14), 75, 32
    block = block_masking(batch, grid, num_masked, generator_for(8, "blocky"))
    scattered = random_masking(batch, grid[0] * grid[1], num_masked / 196, generator_for(8, "scattered"))
    assert scattered.num_masked == num_masked

    def mean_size(tm: TokenMask) -> float:
        sizes = [s for row in tm.bool_mask for s in _component_sizes(row.view(grid))]
        return sum(sizes) / len(sizes)

    # ~14x on average over seeds, never below ~11x
    assert mean_size(block) > 5 * mean_size(scattered)
    # every sample holds a connected region of at least min_block=16 cells (over 40 seeds the smallest was 28)
    largest = [max(_component_sizes(row.view(grid))) for row in block.bool_mask]
    assert min(largest) >= 16


def test_block_max_block_makes_smaller_blocks() -> None:
    def mean_largest(max_block: int | None) -> float:
        tm = block_masking(32, (10, 10), 30, generator_for(9), min_block=2, max_block=max_block, min_aspect=0.5)
        assert tm.mask.sum(dim=1).tolist() == [30.0] * 32
        return sum(max(_component_sizes(row.view(10, 10))) for row in tm.bool_mask) / 32

    # blocks of <= 4 cells only form large regions by touching each other
    assert mean_largest(4) < 0.8 * mean_largest(None)


# ----------------------------------------------------------------------------- ops


def test_restore_tokens_with_mask_token_shapes() -> None:
    tm = masking_from_noise(torch.tensor([[0.5, 0.1, 0.9, 0.3]]), 0.5)
    x = torch.arange(8, dtype=torch.float32).view(1, 4, 2)  # token i = [2i, 2i + 1]
    visible = gather_tokens(x, tm.ids_keep)
    assert visible.tolist() == [[[2.0, 3.0], [6.0, 7.0]]]
    expected = [[[-1.0, -2.0], [2.0, 3.0], [-1.0, -2.0], [6.0, 7.0]]]
    for fill in (torch.tensor([-1.0, -2.0]), torch.tensor([[[-1.0, -2.0]]])):
        assert restore_tokens(visible, tm.ids_restore, fill).tolist() == expected


def test_restore_tokens_casts_fill_and_keeps_grad() -> None:
    tm = _random(0)
    x = torch.randn(BATCH, tm.num_visible, 4, dtype=torch.bfloat16)
    token = torch.zeros(4, requires_grad=True)
    out = restore_tokens(x, tm.ids_restore, token)
    assert out.dtype == torch.bfloat16 and out.shape == (BATCH, tm.num_tokens, 4)
    out.float().sum().backward()
    assert token.grad is not None and torch.equal(token.grad, torch.full((4,), float(BATCH * tm.num_masked)))


def test_masked_mean() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 3 + 6) / 3)
    assert masked_mean(values, mask.bool()).item() == pytest.approx((1 + 3 + 6) / 3)
    with pytest.raises(ValueError, match="non-empty"):
        masked_mean(values, torch.zeros_like(mask))
    with pytest.raises(ValueError, match=r"\(2, 3\) vs \(3, 2\)"):
        masked_mean(values, mask.T)


def test_ops_reject_bad_shapes() -> None:
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        gather_tokens(x[..., 0], torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):  # one masked slot expected, fill has two
        restore_tokens(x[:, :3], torch.arange(4).expand(2, 4), fill=torch.zeros(2, 2, 3))


# ----------------------------------------------------------------------------- TokenMask and conversion


def test_token_mask_from_bool_round_trip_and_order() -> None:
    mask = torch.tensor([[False, True, False, True, False], [True, True, False, False, False]])
    tm = token_mask_from_bool(mask)
    assert torch.equal(tm.bool_mask, mask)
    assert torch.equal(tm.ids_keep, torch.tensor([[0, 2, 4], [2, 3, 4]]))  # visible ascending
    assert torch.equal(tm.ids_masked, torch.tensor([[1, 3], [0, 1]]))  # masked ascending after them
    assert torch.equal(tm.ids_restore, torch.tensor([[0, 3, 1, 4, 2], [3, 4, 0, 1, 2]]))
    _check_consistent(tm)
    # any generated mask survives a trip through bools unchanged
    for kind in sorted(MAKERS):
        generated = MAKERS[kind](1)
        assert torch.equal(token_mask_from_bool(generated.bool_mask).mask, generated.mask)


def test_token_mask_from_bool_rejects_unequal_counts() -> None:
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        token_mask_from_bool(torch.tensor([[True, False, False], [True, True, False]]))


def test_token_mask_slice() -> None:
    tm = _random(2)
    part = tm.slice(2, 5)
    assert part.batch_size == 3 and part.num_tokens == tm.num_tokens and part.num_visible == tm.num_visible
    for name in ("ids_keep", "ids_restore", "mask"):
        assert torch.equal(getattr(part, name), getattr(tm, name)[2:5])
    # per-rank shares reassemble the global batch
    shares = [tm.slice(r * 2, r * 2 + 2) for r in range(BATCH // 2)]
    assert torch.equal(torch.cat([s.mask for s in shares]), tm.mask)
    with pytest.raises(ValueError, match=r"\[6, 9\).*8"):
        tm.slice(6, 9)


def test_token_mask_validates_shapes() -> None:
    with pytest.raises(ValueError, match="disagree"):
        TokenMask(ids_keep=torch.zeros(2, 1, dtype=torch.long), ids_restore=torch.zeros(2, 4), mask=torch.zeros(3, 4))
