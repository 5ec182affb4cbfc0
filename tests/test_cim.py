"""CIM: replacement sampling and RevDet labels (exact), the sliding-window target, no gradient from the enhancer
into the generator, both enhancers (ViT, ResNet) learning, and the CNN encoder's export round trip."""

from __future__ import annotations

import pytest
import torch

from mim.masking import block_masking
from mim.methods.cim import replacement_labels, sample_replacements
from mim.models.cnn import CnnEncoder, CnnSpec
from mim.models.export import export_encoder, load_encoder, read_metadata
from mim.rng import generator_for
from mim.stages.pretrain import metric_names
from mim.targets import sliding_window_normalize
from tests.helpers import build_method, pretrain, tiny_params

CNN = {"model__arch": "cnn", "model__name": "resnet10t", "model__output_stride": 8}


def test_replaced_fraction_is_the_ratio_minus_samples_that_hit_the_original():
    g = torch.Generator().manual_seed(0)
    mask = block_masking(64, (7, 7), 20, generator_for(0, "m"), min_block=4).mask  # 20 of 49 per sample
    ids = torch.randint(0, 8, (64, 49), generator=g)
    logits = torch.randn(64, 49, 8, generator=g)  # K = 8: many samples equal the original id
    sampled = sample_replacements(logits, ids, mask, generator=torch.Generator().manual_seed(1))
    labels = replacement_labels(ids, sampled)
    assert torch.equal(sampled[mask == 0], ids[mask == 0])  # visible tokens keep their id
    hits = ((sampled == ids) & (mask == 1)).float().sum()
    assert 0 < hits < mask.sum()  # some samples drew the original id back, most did not
    assert labels.sum() == mask.sum() - hits  # = ratio * N per sample, minus the hits, exactly
    assert labels.mean() == pytest.approx(20 / 49 - float(hits) / labels.numel())
    assert torch.equal(labels, ((sampled != ids) & (mask == 1)).float())


def test_sampling_follows_the_temperature_and_the_generator():
    logits = torch.tensor([[[4.0, 0.0, 0.0]]]).expand(1, 2000, 3)
    ids, mask = torch.zeros(1, 2000, dtype=torch.long), torch.ones(1, 2000)
    cold = sample_replacements(logits, ids + 1, mask, 0.1, torch.Generator().manual_seed(0))
    hot = sample_replacements(logits, ids + 1, mask, 100.0, torch.Generator().manual_seed(0))
    assert (cold == 0).float().mean() == 1.0  # T -> 0: the argmax
    assert abs((hot == 0).float().mean() - 1 / 3) < 0.05  # T -> inf: uniform
    again = sample_replacements(logits, ids + 1, mask, 100.0, torch.Generator().manual_seed(0))
    assert torch.equal(hot, again)


def test_sliding_window_normalization():
    constant = torch.full((2, 3, 12, 12), 0.7)
    assert torch.equal(sliding_window_normalize(constant, 5), torch.zeros_like(constant))
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    out = sliding_window_normalize(ramp, 5)
    assert torch.isfinite(out).all() and out[..., 2:-2].abs().max() < 1e-3  # centred on a linear ramp: 0 inside
    assert (out[..., 0] < 0).all() and (out[..., -1] > 0).all()  # at borders the window is one-sided
    x = torch.rand(1, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    window = x[0, 1, 2:7, 3:8]  # the 5x5 window centred on pixel (4, 5) of channel 1
    expected = (x[0, 1, 4, 5] - window.mean()) / (window.var(unbiased=False) + 1e-6).sqrt()
    assert sliding_window_normalize(x, 5)[0, 1, 4, 5] == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError, match="window must be an odd positive size, got 4"):
        sliding_window_normalize(x, 4)


@pytest.mark.parametrize("extra", [{}, {**CNN, "method__objective": "respix"}], ids=["vit-revdet", "resnet-respix"])
def test_the_enhancer_loss_sends_no_gradient_into_the_generator(extra):
    torch.manual_seed(0)
    method = build_method(tiny_params("cim", **extra))
    images = torch.randn(4, 3, 16, 16)
    mask = method.sample_masks(4, generator_for(0, "m"))
    logits = method.generate(images, mask.mask)
    corrupted = method.corrupt(images, mask.mask, logits)["corrupted"]
    method.enh_head(method.enhance(corrupted)).float().pow(2).mean().backward()
    assert all(p.grad is None for p in method.generator.parameters()) and method.gen_mask_token.grad is None
    assert method.enh_head.weight.grad.abs().sum() > 0
    method.zero_grad(set_to_none=True)
    out = method({"images": images, "mask": mask})
    out["loss"].backward()
    assert method.gen_head.weight.grad.abs().sum() > 0 and method.enh_head.weight.grad.abs().sum() > 0
    expected = {"loss_gen", "loss_enh", "cim/gen_acc", "cim/replaced_fraction"}
    assert set(out["logs"]) == expected | ({"cim/revdet_acc"} if not extra else set())
    # in MLflow, the method's namespaced names stay as they are beside the common train/ ones
    assert {"train/loss_gen", "train/loss_enh", "cim/gen_acc", "cim/replaced_fraction"} <= set(
        metric_names(out["logs"]))
    panels = method.reconstruct({"images": images, "mask": mask})
    assert set(panels) == {"input", "replaced", "prediction" if extra else "detected"}


def test_the_generator_trains_with_its_own_lr_and_weight_decay():
    from mim.engine.optim import build_adamw
    from mim.engine.schedule import build_scheduler

    method = build_method(tiny_params("cim", **{"method.generator.lr_scale": 0.25,
                                                "method.generator.weight_decay": 0.01}))
    opt = build_adamw(method, 1e-3, 0.05, overrides=method.optimizer_overrides())
    names = {id(p): n for n, p in method.named_parameters() if p.requires_grad}  # not the sin-cos tables
    by_name = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_name.keys() == set(names.values())  # every trained parameter in exactly one group
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    generator = {n for n in by_name if n.startswith(("generator.", "gen_"))}
    assert {"gen_mask_token", "gen_head.weight", "generator.blocks.0.attn.qkv.weight"} <= generator
    assert by_name["generator.blocks.0.attn.qkv.weight"] == pytest.approx((2.5e-4, 0.01))
    assert by_name["gen_head.bias"] == pytest.approx((2.5e-4, 0.0))
    assert by_name["encoder.blocks.0.attn.qkv.weight"] == pytest.approx((1e-3, 0.05))
    assert by_name["enh_head.weight"] == pytest.approx((1e-3, 0.05))
    scheduler = build_scheduler(opt, total_steps=10, warmup_steps=2)
    for _ in range(4):
        opt.step()
        scheduler.step()
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs[0.25] == pytest.approx(0.25 * lrs[1.0])  # the schedule keeps the generator's ratio


def test_other_methods_refuse_a_cnn():
    with pytest.raises(ValueError, match="model.arch: mae needs a ViT encoder"):
        build_method(tiny_params("mae", **CNN))


def test_cnn_encoder_export_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = CnnEncoder(CnnSpec(name="resnet10t", img_size=16, output_stride=8, kwargs={"stem_width": 16}))
    export_encoder(encoder, str(tmp_path / "enc.safetensors"))
    back = load_encoder(str(tmp_path / "enc.safetensors"))
    x = torch.randn(2, 3, 16, 16)
    assert isinstance(back, CnnEncoder) and back.spec == encoder.spec
    assert torch.allclose(back.eval().pooled(x), encoder.eval().pooled(x))
    meta = read_metadata(str(tmp_path / "enc.safetensors"))
    import timm

    same = timm.create_model(meta["timm_name"], num_classes=0, **__import__("json").loads(meta["timm_kwargs"]))
    same.load_state_dict(back.body.state_dict())  # timm loads the exported keys unchanged


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {**CNN, "method__objective": "respix"}], ids=["vit-revdet", "resnet-respix"])
def test_both_enhancers_learn(extra, tmp_path):
    params = tiny_params("cim", train__steps=30, optim__base_lr=3e-3, data__source="synthetic:256", **extra)
    result = pretrain(params, str(tmp_path / "run"))
    history = result.history
    key = "loss_enh"
    assert sum(history[key][-5:]) / 5 < 0.9 * sum(history[key][:5]) / 5, history[key]
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_masked_pixels_never_reach_the_generator():
    """CIM's generator sees the block-masked image with a mask token in place of every masked patch: changing
    the pixels under the mask leaves its logits unchanged; control: changing a visible patch changes them."""
    torch.manual_seed(0)
    method = build_method(tiny_params("cim")).eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = method.sample_masks(4, generator_for(0, "m")).mask  # [B, N], 1 = masked
    pixels = lambda m: m.view(4, 1, 4, 4).bool().repeat_interleave(4, 2).repeat_interleave(4, 3)  # noqa: E731
    noise = 3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = method.generate(images, mask)
        under_mask = method.generate(images + noise * pixels(mask), mask)
        visible = method.generate(images + noise * pixels(1 - mask), mask)
    assert 0 < mask.sum() < mask.numel()
    assert torch.allclose(logits, under_mask, atol=1e-5)
    assert (logits - visible).abs().max() > 1e-3


def test_the_corrupted_image_is_the_whole_decoded_token_map_by_default():
    """decode_all (default, the paper's): every patch of the corrupted image is a centroid, visible ones their own
    (nearest) centroid; control, decode_all false: visible patches keep their pixels."""
    from mim.params.methods import CimParams
    from mim.targets import patch_vectors

    assert CimParams().decode_all
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1  # mean 0.5, std 0.5
    for decode_all in (True, False):
        method = build_method(tiny_params("cim", method__decode_all=decode_all)).eval()
        mask = method.sample_masks(4, generator_for(0, "m")).mask
        with torch.no_grad():
            c = method.corrupt(images, mask, method.generate(images, mask))
        shown = patch_vectors(method._raw(c["corrupted"]), 4)  # [B, N, C*p*p] in [0, 1]
        visible = mask == 0
        assert torch.allclose(shown[~visible], method.centroids[c["sampled"]][~visible], atol=1e-5)
        kept = torch.allclose(shown[visible], c["pixels"][visible], atol=1e-5)
        own_centroid = torch.allclose(shown[visible], method.centroids[c["ids"]][visible], atol=1e-5)
        assert (own_centroid, kept) == ((True, False) if decode_all else (False, True)), decode_all
