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
    assert method.projector[-2].weight is None and isinstance(method.projector[-1], torch.nn.Linear)


def test_visible_head_ends_with_a_linear_predictor_so_predictions_are_not_standardized():
    """The authors' head: projector ... -> LayerNorm without affine -> Linear predictor. Its output can take a
    target's scale and offset (here mean 2 per token: the least-squares predictor fits it to the noise level);
    the control, the same head ending at the LayerNorm (this project's old head), gives every token zero mean and
    unit variance over its features whatever its weights, so it stays >= 4 away in MSE."""
    from mim.methods.dmjd import projector

    torch.manual_seed(0)
    head = projector(32, 16, 24)
    assert isinstance(head[-2], torch.nn.LayerNorm) and head[-2].weight is None
    assert isinstance(head[-1], torch.nn.Linear) and (head[-1].in_features, head[-1].out_features) == (16, 24)
    control = torch.nn.Sequential(*head[:-3], torch.nn.Linear(16, 24), torch.nn.LayerNorm(24, elementwise_affine=False))
    x = torch.randn(64, 32)
    target = 2.0 + 0.5 * torch.randn(64, 24)
    with torch.no_grad():
        features = torch.cat([head[:-1](x), torch.ones(64, 1)], 1)  # [64, 16 + 1]: the predictor's input and bias
        solution = torch.linalg.lstsq(features, target).solution  # [17, 24]
        head[-1].weight.copy_(solution[:-1].T)
        head[-1].bias.copy_(solution[-1])
        fitted, pinned = head(x), control(x)
    assert (fitted - target).pow(2).mean() < 0.3  # the noise's variance is 0.25
    assert torch.allclose(pinned.mean(-1), torch.zeros(64), atol=1e-5)  # the control: mean 0, var 1 per token
    assert torch.allclose(pinned.var(-1, unbiased=False), torch.ones(64), atol=1e-2)
    assert (pinned - target).pow(2).mean() > 4.0
    assert not torch.allclose(fitted.mean(-1), torch.zeros(64), atol=0.5)


def _smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """SmoothL1 written out: 0.5 d^2 / beta below beta, d - beta / 2 above; mean over every element."""
    d = (pred - target).abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta).mean()


def test_both_dmjd_losses_recomputed_by_hand_from_the_models_parts():
    """L = L_mim + w * L_vis, with L_mim the L2 over masked tokens of every view and L_vis the SmoothL1(beta 2) of
    the visible tokens' head outputs, recomputed here view by view and sample by sample; checked against the
    method's total loss (not its logs) at two weights w, which pins each of the two parts. Control: the same sums
    over the wrong tokens (all tokens for L_mim, masked ones for L_vis) give other values."""
    torch.manual_seed(0)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    method = build_method(tiny_params("dmjd")).eval()
    views = method.sample_masks(3, generator_for(0, "m"))
    masked_terms, visible_terms, wrong_mim, wrong_vis = [], [], [], []
    with torch.no_grad():
        target = method.target(images).float()  # [B, N, D_t]
        for view in views.views:
            latent = method.encoder.forward_masked(images, view.ids_keep)  # [B, 1+K, D]
            pred = method.decoder(latent, view.ids_restore).float()  # [B, N, D_t]
            per_token = (pred - target).pow(2).mean(-1)  # [B, N]
            masked_terms.append(per_token[view.mask.bool()])
            wrong_mim.append(per_token.flatten())
            head = method.projector(latent[:, 1:]).float()  # [B, K, D_t]
            for b in range(3):
                visible_terms.append((head[b], target[b, view.ids_keep[b]]))
                wrong_vis.append((head[b], target[b, view.mask[b].bool()][: head.shape[1]]))
        l_mim = torch.cat(masked_terms).mean()
        l_vis = _smooth_l1(torch.stack([p for p, _ in visible_terms]), torch.stack([t for _, t in visible_terms]), 2.0)
        for w in (0.5, 2.0):
            method.visible_weight = w
            loss = method({"images": images, "mask": views})["loss"]
            assert float(loss) == pytest.approx(float(l_mim + w * l_vis), rel=1e-5), w
        bad_mim = torch.cat(wrong_mim).mean()
        bad_vis = _smooth_l1(torch.stack([p for p, _ in wrong_vis]), torch.stack([t for _, t in wrong_vis]), 2.0)
    assert abs(float(bad_mim - l_mim)) > 1e-3 and abs(float(bad_vis - l_vis)) > 1e-3  # the test can tell


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
