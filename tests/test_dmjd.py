"""DMJD: disjoint views (pairwise disjoint visible sets, the coverage formula), the dual-branch method, HOG
and multi-view options of the MAE/SimMIM recipes, and low-resolution pre-training evaluated at full size."""

from __future__ import annotations

import itertools

import pytest
import torch

from mim.masking import disjoint_views, expand_views, expected_coverage
from mim.models.export import export_encoder, load_encoder
from mim.models.vit import ViTSpec, build_vit
from mim.params import load_pretrain
from mim.rng import generator_for
from tests.helpers import ROOT, build_method, pretrain, tiny_params


@pytest.mark.parametrize(("grid", "ratio", "views", "unit"),
                         [((7, 7), 0.6, 2, 1), ((8, 8), 0.75, 4, 1), ((8, 8), 0.5, 2, 2), ((7, 7), 0.3, 3, 1)])
def test_visible_sets_are_disjoint_and_coverage_follows_the_formula(grid, ratio, views, unit):
    mv = disjoint_views(32, grid, ratio, views, generator_for(0, "views"), unit=unit)
    n = grid[0] * grid[1]
    visible = [1 - v.mask for v in mv.views]  # [B, N] each
    k = int(visible[0][0].sum())
    assert all(int(v.sum(1).min()) == int(v.sum(1).max()) == k for v in visible)  # every view keeps K tokens
    overlap_allowed = max(0, views * k - n)  # zero when the views fit side by side
    total_overlap = sum((a * b).sum(1) for a, b in itertools.combinations(visible, 2))
    if overlap_allowed == 0:
        assert total_overlap.max() == 0  # pairwise disjoint
    assert torch.allclose(mv.coverage(), torch.full((32,), expected_coverage(n, k, views)))
    if unit > 1:  # whole unit x unit blocks share one state
        m = mv.views[0].mask.view(32, grid[0] // unit, unit, grid[1] // unit, unit)
        assert (m.amax((2, 4)) == m.amin((2, 4))).all()


def test_dmjd_coverage_at_the_reference_recipe_is_every_token():
    mv = disjoint_views(4, (14, 14), 0.6, 2, generator_for(1, "views"))
    assert mv.coverage().eq(1).all()  # ratio 0.6, 2 views: every token is a target in some view
    images, stacked = expand_views(torch.randn(4, 3, 8, 8), mv)
    assert images.shape[0] == 8 and stacked.mask.shape == (8, 196)


def test_dmjd_branches_and_logs():
    torch.manual_seed(0)
    method = build_method(tiny_params("dmjd"))
    images = torch.randn(4, 3, 16, 16)
    out = method({"images": images, "mask": method.sample_masks(4, generator_for(0, "m"))})
    out["loss"].backward()
    logs = out["logs"]
    assert set(logs) == {"dmjd/loss_masked", "dmjd/loss_visible", "dmjd/token_coverage"}
    assert out["loss"].item() == pytest.approx((logs["dmjd/loss_masked"] + logs["dmjd/loss_visible"]).item(), 1e-5)
    assert method.projector[0].weight.grad.abs().sum() > 0 and method.decoder.pred.weight.grad.abs().sum() > 0
    assert method.projector[-1].weight is None  # the last LayerNorm has no affine


def test_hog_and_views_are_options_of_the_mae_and_simmim_recipes():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 16, 16)
    for name, extra in (("mae", {"method__target": "hog", "method__views": 2}),
                        ("simmim", {"method__target": "hog", "method__hog__flavour": "maskfeat"})):
        method = build_method(tiny_params(name, **extra))
        out = method({"images": images, "mask": method.sample_masks(4, generator_for(0, "m"))})
        out["loss"].backward()
        assert set(out["logs"]) == {"loss_target"} and torch.isfinite(out["loss"])
    for recipe, method_name in (("maskfeat", "simmim"), ("fastmim", "mae")):
        params = load_pretrain(ROOT / "params", recipe)
        assert params.method.name == method_name and params.method.target == "hog"
    assert load_pretrain(ROOT / "params", "fastmim").image_size < load_pretrain(ROOT / "params", "mae").image_size


@pytest.mark.parametrize("target", ["pixels", "hog"])
def test_simmim_with_disjoint_views_averages_its_single_view_losses(target):
    torch.manual_seed(0)
    method = build_method(tiny_params("simmim", method__views=2, method__target=target)).eval()
    images = torch.randn(4, 3, 16, 16)
    views = method.sample_masks(4, generator_for(0, "m"))
    assert len(views.views) == 2
    visible = [1 - v.mask for v in views.views]
    assert not (visible[0] * visible[1]).any()  # disjoint visible sets, on 8-px units (2x2 tokens)
    assert torch.equal(views.views[0].mask.view(4, 2, 2, 2, 2)[:, :, 0, :, 0],
                       views.views[0].mask.view(4, 2, 2, 2, 2)[:, :, 1, :, 1])
    with torch.no_grad():
        joint = method({"images": images, "mask": views})["loss"]
        single = [method({"images": images, "mask": v})["loss"] for v in views.views]
    assert float(joint) == pytest.approx(float(sum(single) / 2), rel=1e-5)


def test_low_resolution_encoder_evaluates_at_full_size(tmp_path):
    torch.manual_seed(0)
    small = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    export_encoder(small, str(tmp_path / "enc.safetensors"))
    big = load_encoder(str(tmp_path / "enc.safetensors"), img_size=28)
    assert big.grid == (7, 7) and big.pooled(torch.randn(2, 3, 28, 28)).shape == (2, 32)
    assert torch.equal(big.blocks[0].attn.qkv.weight, small.blocks[0].attn.qkv.weight)


@pytest.mark.slow
@pytest.mark.parametrize("per_mask_ratio", [True, False])
def test_dmjd_scales_lr_by_one_over_the_mask_ratio(per_mask_ratio, tmp_path):
    from mim.data import load_dataset
    from tests.helpers import make_trainer

    params = tiny_params("dmjd", optim__base_lr=3e-4, method__lr_per_mask_ratio=per_mask_ratio)
    trainer = make_trainer(build_method(params), load_dataset("synthetic:32", size=16), params, str(tmp_path))
    expected = 3e-4 * 16 / 256 / (0.6 if per_mask_ratio else 1.0)
    assert trainer.lr == pytest.approx(expected)
    assert all(g["initial_lr"] == pytest.approx(expected) for g in trainer.optimizer.param_groups)  # the peak


def test_both_dmjd_branches_learn(tmp_path):
    params = tiny_params("dmjd", train__steps=40, optim__base_lr=6e-3, data__source="synthetic:256")  # lr 1e-2
    history = pretrain(params, str(tmp_path / "run")).history
    for key in ("dmjd/loss_masked", "dmjd/loss_visible"):
        assert sum(history[key][-5:]) / 5 < 0.92 * sum(history[key][:5]) / 5, (key, history[key])
