"""Every method: forward + backward at tiny size, losses checked against hand computations."""

import pytest
import torch

from mim.data import make_synthetic
from mim.masking import masking_from_noise, unit_masking
from mim.params.bind.methods import METHOD_BUILDERS as METHODS
from mim.targets import normalize_patches, patchify, unpatchify
from tests.helpers import build_method, tiny_params


@pytest.mark.parametrize("name", sorted(METHODS))
def test_forward_backward_finite_and_reaches_encoder(name):
    torch.manual_seed(0)
    params = tiny_params(name)
    method = build_method(params)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 16, 16, generator=gen)
    out = method({"images": images, "mask": method.sample_masks(4, gen)})
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert set(out["logs"]) and all(torch.isfinite(v) for v in out["logs"].values())
    out["loss"].backward()
    stem = method.encoder.patch_embed  # timm's PatchEmbed (ViT) or a plain conv (hierarchical encoder)
    grad = getattr(stem, "proj", stem).weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_decreases_when_fitting_one_batch(name):
    torch.manual_seed(0)
    method = build_method(tiny_params(name))
    gen = torch.Generator().manual_seed(1)
    images = make_synthetic(8, size=16, seed=0).images.float() / 127.5 - 1
    batch = {"images": images, "mask": method.sample_masks(8, gen)}
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = method(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


def test_mae_loss_is_mse_of_normalized_pixels_on_masked_patches_only():
    torch.manual_seed(0)
    method = build_method(tiny_params("mae")).eval()
    images = torch.randn(2, 3, 16, 16)
    mask = masking_from_noise(torch.rand(2, 16), 0.75)
    pred = method.predict(images, mask)
    target = patchify(images, 4)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    expected = (per_patch * mask.mask).sum() / mask.mask.sum()
    assert torch.allclose(method({"images": images, "mask": mask})["loss"], expected, atol=1e-6)
    # the library's target is the same per-patch standardization
    assert torch.allclose(normalize_patches(patchify(images, 4)), target, atol=1e-6)


def test_simmim_loss_is_l1_on_masked_pixels_only():
    torch.manual_seed(0)
    method = build_method(tiny_params("simmim")).eval()
    images = torch.randn(2, 3, 16, 16)
    mask = unit_masking(2, 16, 4, 8, 0.5, torch.Generator().manual_seed(0))
    pred = method.predict(images, mask)
    pix = mask.mask.reshape(2, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    expected = ((pred - images).abs() * pix).sum() / (pix.sum() * 3)
    assert torch.allclose(method({"images": images, "mask": mask})["loss"], expected, atol=1e-6)
    # the mask covers whole 8-px units: 2 of the 4 units in each image
    assert torch.equal(pix.sum(dim=(1, 2, 3)), torch.tensor([128.0, 128.0]))


def test_simmim_prediction_of_visible_pixels_does_not_change_loss():
    torch.manual_seed(0)
    method = build_method(tiny_params("simmim")).eval()
    images = torch.randn(1, 3, 16, 16)
    mask = unit_masking(1, 16, 4, 8, 0.5, torch.Generator().manual_seed(3))
    pix = method.pixel_mask(mask)
    changed = images + (1 - pix) * 5.0  # only visible pixels differ
    a = method({"images": images, "mask": mask})["loss"]
    b_pred = method.predict(changed, mask)
    b_expected = ((b_pred - changed).abs() * pix).sum() / (pix.sum() * 3)
    assert torch.allclose(method({"images": changed, "mask": mask})["loss"], b_expected, atol=1e-6)
    assert not torch.allclose(a, b_expected)  # the input changed, so the prediction did


def test_patchify_round_trip():
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(x, 4), 4, (4, 4), 3), x)
    # patch 0 holds the top-left 4x4 block in (py, px, c) order
    assert torch.equal(patchify(x, 4)[:, 0].reshape(2, 4, 4, 3).permute(0, 3, 1, 2), x[:, :, :4, :4])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_reconstruct_shapes(name):
    method = build_method(tiny_params(name))
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 16, 16, generator=gen)
    out = method.reconstruct({"images": images, "mask": method.sample_masks(2, gen)})
    assert "input" in out and len(out) >= 2  # the corrupted input and at least one answer of the model
    assert all(v.shape == images.shape for v in out.values())


@pytest.mark.parametrize("name", ["mae", "img2vec", "dmjd"])
def test_mae_family_masks_count_by_the_official_rule_by_default(name):
    """16 tokens at ratio 0.4: MAE's code keeps int(16 * 0.6) = 9 (masks 7); `round` masks int(6.4 + 0.5) = 6."""
    counts = {}
    for rule in ("official", "round"):
        extra = {} if rule == "official" else {"method__mask_count": "round"}
        method = build_method(tiny_params(name, method__mask_ratio=0.4, **extra))
        masks = method.sample_masks(4, torch.Generator().manual_seed(0))
        views = getattr(masks, "views", (masks,))
        counts[rule] = {int(m) for v in views for m in v.mask.sum(1)}
    assert counts == {"official": {7}, "round": {6}}
