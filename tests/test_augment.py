"""Tests for mim.data's batch augmentation (crops, flips, resizing, normalization on CPU and GPU) and its step
batching (epoch permutations, resumable order, rank slices)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mim.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    CropParams,
    StepBatches,
    apply_crops,
    full_crops,
    make_synthetic,
    sample_crops,
)
from mim.rng import generator_for

# ---------------------------------------------------------------- augmentation


def test_full_crops_equal_plain_resize() -> None:
    images = torch.randint(0, 256, (3, 3, 12, 20), dtype=torch.uint8, generator=generator_for(0, "img"))
    for out in (8, 16, 30):
        got = apply_crops(images, full_crops(3), out_size=out, mean=(0.0,) * 3, std=(1.0,) * 3)
        ref = F.interpolate(images.float() / 255, size=(out, out), mode="bilinear", align_corners=False)
        assert got.shape == (3, 3, out, out) and got.dtype == torch.float32
        assert torch.allclose(got, ref, atol=1e-5)


def test_flip_flips_and_crop_selects_region() -> None:
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=generator_for(1, "img"))
    plain = apply_crops(images, full_crops(2), out_size=16, mean=(0.0,) * 3, std=(1.0,) * 3)
    flipped = CropParams(boxes=full_crops(2).boxes, flip=torch.tensor([True, False]))
    got = apply_crops(images, flipped, out_size=16, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert torch.allclose(got[0], plain[0].flip(-1), atol=1e-6)
    assert torch.allclose(got[1], plain[1], atol=1e-6)
    # The top-left quadrant box at the quadrant's own resolution reproduces its pixels exactly.
    quadrant = CropParams(boxes=torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 2), flip=torch.zeros(2, dtype=torch.bool))
    got = apply_crops(images, quadrant, out_size=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert torch.allclose(got, images[:, :, :8, :8].float() / 255, atol=1e-5)
    assert torch.equal(quadrant.slice(1, 2).boxes, quadrant.boxes[1:])


def test_sample_crops_bounds_and_determinism() -> None:
    scale, ratio = (0.2, 0.6), (3 / 4, 4 / 3)
    crops = sample_crops(2000, scale=scale, ratio=ratio, hflip_prob=0.5, generator=generator_for(0, "crops"))
    again = sample_crops(2000, scale=scale, ratio=ratio, hflip_prob=0.5, generator=generator_for(0, "crops"))
    other = sample_crops(2000, scale=scale, ratio=ratio, hflip_prob=0.5, generator=generator_for(1, "crops"))
    assert torch.equal(crops.boxes, again.boxes) and torch.equal(crops.flip, again.flip)
    assert not torch.equal(crops.boxes, other.boxes)
    x0, y0, x1, y1 = crops.boxes.unbind(1)
    assert crops.boxes.min() >= 0 and crops.boxes.max() <= 1
    assert (x1 > x0).all() and (y1 > y0).all()
    w, h = x1 - x0, y1 - y0
    area, aspect = w * h, w / h
    accepted = area < 1 - 1e-6  # fallback boxes are the whole image
    assert accepted.float().mean() > 0.99  # with scale <= 0.6 almost every image fits within 10 attempts
    assert (area[accepted] >= scale[0] - 1e-5).all() and (area[accepted] <= scale[1] + 1e-5).all()
    assert (aspect[accepted] >= ratio[0] - 1e-4).all() and (aspect[accepted] <= ratio[1] + 1e-4).all()
    assert 0.45 < crops.flip.float().mean() < 0.55
    # Impossible aspect ratios fall back to the whole image, never flipping with hflip_prob=0.
    wide = sample_crops(5, scale=(0.9, 1.0), ratio=(5.0, 6.0), hflip_prob=0.0, generator=generator_for(0))
    assert torch.equal(wide.boxes, full_crops(5).boxes) and not wide.flip.any()


def test_gray_to_rgb_and_normalization() -> None:
    gray = torch.randint(0, 256, (2, 1, 10, 10), dtype=torch.uint8, generator=generator_for(2, "img"))
    out = apply_crops(gray, full_crops(2), out_size=10, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert out.shape == (2, 3, 10, 10)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    unnormalized = out * std + mean
    assert torch.allclose(unnormalized, (gray.float() / 255).expand(-1, 3, -1, -1), atol=1e-5)
    assert torch.allclose(unnormalized[:, 0], unnormalized[:, 2], atol=1e-5)
    kept = apply_crops(gray, full_crops(2), out_size=10, mean=(0.5,), std=(0.25,), to_rgb=False)
    assert kept.shape == (2, 1, 10, 10)
    assert torch.allclose(kept, (gray.float() / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="one value per output channel"):
        apply_crops(gray, full_crops(2), out_size=10, mean=(0.5,), std=(0.25,))


def test_batch_augment_same_seed_same_output() -> None:
    data = make_synthetic(16, size=20, seed=0)
    augment = BatchAugment(out_size=12)
    out1 = augment(data.images, augment.sample(16, generator_for(7, "aug", 0)))
    out2 = augment(data.images, augment.sample(16, generator_for(7, "aug", 0)))
    out3 = augment(data.images, augment.sample(16, generator_for(7, "aug", 1)))
    assert out1.shape == (16, 3, 12, 12) and torch.equal(out1, out2) and not torch.equal(out1, out3)
    evaluated = augment.eval(data.images)
    assert torch.equal(evaluated, augment.eval(data.images))
    with pytest.raises(ValueError, match="scale"):
        BatchAugment(out_size=8, scale=(0.5, 0.1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_gpu_matches_cpu() -> None:
    data = make_synthetic(8, size=20, seed=0)
    augment = BatchAugment(out_size=16)
    crops = augment.sample(8, generator_for(0, "aug"))
    cpu = augment(data.images, crops)
    gpu = augment(data.to("cuda").images, crops)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    with pytest.raises(ValueError, match="CPU"):
        sample_crops(2, generator=torch.Generator(device="cuda"))


# ---------------------------------------------------------------- step batches


@pytest.mark.parametrize(("num_samples", "batch", "drop_last"), [(24, 8, True), (25, 8, False), (10, 3, False)])
def test_step_batches_epochs_are_permutations(num_samples: int, batch: int, drop_last: bool) -> None:
    batches = StepBatches(num_samples, batch, seed=5, drop_last=drop_last)
    assert batches.steps_per_epoch == math.ceil(num_samples / batch)
    epochs = []
    for epoch in range(2):
        steps = range(epoch * batches.steps_per_epoch, (epoch + 1) * batches.steps_per_epoch)
        seen = torch.cat([batches.indices(s) for s in steps])
        assert seen.dtype == torch.long
        assert sorted(seen.tolist()) == list(range(num_samples))  # every sample exactly once
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # a fresh shuffle each epoch


def test_step_batches_deterministic_and_resumable() -> None:
    a = StepBatches(100, 16, seed=1)
    b = StepBatches(100, 16, seed=1)
    assert a.steps_per_epoch == 6  # drop_last: 4 samples left out per epoch
    order = [a.indices(s) for s in range(20)]
    resumed = [b.indices(s) for s in range(13, 20)]  # fresh instance starting mid-run
    assert all(torch.equal(x, y) for x, y in zip(order[13:], resumed, strict=True))
    assert all(len(x) == 16 and len(set(x.tolist())) == 16 for x in order)
    assert not torch.equal(StepBatches(100, 16, seed=2).indices(0), order[0])


def test_step_batches_rank_slices_partition() -> None:
    indices = StepBatches(64, 12, seed=0).indices(3)
    shares = [StepBatches.rank_slice(indices, r, 4) for r in range(4)]
    assert all(len(s) == 3 for s in shares)
    assert torch.equal(torch.cat(shares), indices)
    with pytest.raises(ValueError, match="not divisible by world_size 5"):
        StepBatches.rank_slice(indices, 0, 5)
    with pytest.raises(ValueError, match="global_batch 50.*10 samples"):
        StepBatches(10, 50, seed=0)
