"""Evaluation protocols: class-balanced label fractions (balanced, seeded, nested), a metric per fraction from the
linear probe and from fine-tuning, the fine-tuning recipe's RandAugment and random erasing (on changes the batch,
off does not, seeded per step), and the evaluation center crop's geometry."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import mim.evaluation.evaluate as evaluate_mod
from mim.data import balanced_subset, load_dataset
from mim.evaluation.evaluate import fraction_key, probe_features
from mim.evaluation.finetune import finetune
from mim.evaluation.finetune_augment import FinetuneAugment, StepAugment, rand_augment
from mim.models.vit import ViTSpec, build_vit
from mim.params import DataParams, EvalParams, TransferParams
from mim.params.bind.data import augment
from mim.params.bind.evaluation import probe_config
from mim.rng import generator_for
from mim.stages.transfer import finetune_fractions
from mim.tracking import StageRun


def _labels() -> torch.Tensor:
    labels = torch.tensor([0] * 100 + [1] * 200 + [2] * 50)  # [350], imbalanced
    return labels[torch.randperm(350, generator=torch.Generator().manual_seed(1))]


def test_balanced_subset_is_balanced_seeded_and_nested():
    labels = _labels()
    ten = balanced_subset(labels, 0.1, generator_for(0, "label-fraction"))
    assert torch.bincount(labels[ten]).tolist() == [10, 20, 5]  # a tenth of every class
    assert torch.equal(ten, ten.sort().values) and len(ten.unique()) == len(ten)
    assert torch.equal(ten, balanced_subset(labels, 0.1, generator_for(0, "label-fraction")))  # seeded
    other = balanced_subset(labels, 0.1, generator_for(1, "label-fraction"))
    assert not torch.equal(ten, other)  # control: another seed draws other images
    one = balanced_subset(labels, 0.01, generator_for(0, "label-fraction"))
    assert torch.bincount(labels[one]).tolist() == [1, 2, 1]  # at least one of each class
    assert set(one.tolist()) <= set(ten.tolist())  # 1 % inside 10 %
    assert torch.equal(balanced_subset(labels, 1.0, generator_for(0, "x")), torch.arange(350))
    with pytest.raises(ValueError, match="label fraction must be in"):
        balanced_subset(labels, 0.0, generator_for(0))
    with pytest.raises(ValueError, match="class label"):
        balanced_subset(torch.tensor([0, -1]), 0.5, generator_for(0))


def test_label_fraction_params_are_checked():
    assert fraction_key("linear", 0.01) == "linear_1pct_top1" and fraction_key("finetune", 1.0) == "finetune_top1"
    assert fraction_key("linear", 0.1) == "linear_10pct_top1" and fraction_key("linear", 0.005) == "linear_0.5pct_top1"
    with pytest.raises(ValueError, match="must hold 1.0"):
        EvalParams(label_fractions=[0.01, 0.1])
    with pytest.raises(ValueError, match="repeat"):
        TransferParams(finetune={"label_fractions": [0.1, 0.1]})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        EvalParams(label_fractions=[1.5, 1.0])
    with pytest.raises(ValueError, match="auto_augment"):
        TransferParams(finetune={"auto_augment": "augmix-m5"})
    with pytest.raises(ValueError, match="finetune.auto_augment 'rand-q9'"):
        rand_augment("rand-q9", 28, (0.5, 0.5, 0.5))


def test_linear_probe_reports_each_fraction_on_shared_features(monkeypatch):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)  # 200 samples, 4 classes
    feats = torch.randn(4, 8, generator=g)[labels] * 3 + 0.1 * torch.randn(200, 8, generator=g)
    seen = []
    real = evaluate_mod.linear_probe
    monkeypatch.setattr(evaluate_mod, "linear_probe", lambda x, y, *a, **kw: seen.append(
        (torch.bincount(y).tolist(), kw["epochs"])) or real(x, y, *a, **kw))
    params = EvalParams(label_fractions=[0.1, 1.0], linear={"epochs": 2, "batch_size": 64, "lr": 5e-2})
    metrics = probe_features(feats, labels, feats, labels, probe_config(params), torch.device("cpu"))
    assert set(metrics) == {"knn_top1", "linear_10pct_top1", "linear_top1"}
    assert metrics["linear_top1"] == 100 and metrics["linear_10pct_top1"] > 90  # separable clusters
    # the 10 % probe fits 5 per class with as many steps as the full one: 2 epochs x 4 = 8 epochs of 1 step
    assert seen == [([5, 5, 5, 5], 8), ([50, 50, 50, 50], 2)]


def _tiny():
    d = DataParams(source="synthetic:64", image_size=16)
    return d, load_dataset(d.source, "train", size=16), load_dataset("synthetic:32", "test", size=16)


def test_transfer_writes_a_finetune_metric_per_fraction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d, train, test = _tiny()
    torch.manual_seed(0)
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    params = TransferParams(finetune={"epochs": 1, "batch_size": 16, "device": "cpu", "label_fractions": [0.25, 1.0],
                                      "low_label_steps": 3, "drop_path": 0.0})
    with StageRun("transfer", "tiny", enabled=False) as tracker:
        out = finetune_fractions(vit, "tiny", None, 0, train, test, params, d, tracker)
    assert set(out) == {f"finetune{p}_{m}" for p in ("", "_25pct") for m in ("top1", "steps", "wall_time_s")}
    assert out["finetune_steps"] == 4 and out["finetune_25pct_steps"] == 3  # 64 / 16; low_label_steps
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())  # each run fine-tunes a copy
    assert (tmp_path / "plots/transfer/tiny/seed-0.csv").read_text().startswith("step,")
    seen = []
    done = SimpleNamespace(top1=50.0, steps=1, wall_time_s=0.1, history={"step": [1], "loss": [0.5], "lr": [1e-3]})
    monkeypatch.setattr("mim.stages.transfer.finetune", lambda *a, **kw: seen.append(kw["layer_decay"]) or done)
    (tmp_path / "models/mae/seed-0").mkdir(parents=True)
    (tmp_path / "models/mae/seed-0/encoder.safetensors").write_bytes(b"x")
    decayed = TransferParams(finetune={"device": "cpu", "batch_size": 16, "layer_decay": 0.6,
                                       "scratch_layer_decay": 0.9})
    for method in (None, "mae"):  # the scratch encoder has its own decay; a pre-trained one the recipe's
        finetune_fractions(vit, "tiny", method, 0, train, test, decayed, d, tracker)
    assert seen == [0.9, 0.6]
    small = TransferParams(finetune={"batch_size": 16, "device": "cpu", "label_fractions": [0.1]})
    with pytest.raises(ValueError, match=r"label_fractions 0.1: \d labelled images, fewer than finetune.batch_size"):
        finetune_fractions(vit, "tiny", None, 0, train, test, small, d, tracker)


def test_randaugment_and_erasing_change_the_batch_only_when_on_and_replay_per_step():
    images = load_dataset("synthetic:8", "train", size=16).images  # [8, 3, 16, 16] uint8
    x = torch.randn(8, 3, 16, 16)
    off = StepAugment(FinetuneAugment(), 16, (0.5, 0.5, 0.5), seed=0)
    assert not off.on_pixels and torch.equal(off.normalized(x.clone(), 0, 0), x)
    on = StepAugment(FinetuneAugment(auto_augment="rand-m9-mstd0.5-inc1", reprob=1.0, remode="pixel"), 16,
                     (0.5, 0.5, 0.5), seed=0)
    state = random.getstate()
    a = on.pixels(images, step=3, rank=0)
    assert a.shape == images.shape and a.dtype == torch.uint8 and not torch.equal(a, images)
    assert torch.equal(a, on.pixels(images, step=3, rank=0))  # the same step replays
    assert not torch.equal(a, on.pixels(images, step=4, rank=0))  # another step draws anew
    grey = on.pixels(images[:, :1], step=3, rank=0)
    assert grey.shape == (8, 1, 16, 16)
    e = on.normalized(x.clone(), 3, 0)
    assert (e != x).any() and torch.equal(e, on.normalized(x.clone(), 3, 0))
    assert not torch.equal(e, on.normalized(x.clone(), 4, 0))
    assert random.getstate() == state  # the global generators are left as they were
    weak = StepAugment(FinetuneAugment(auto_augment="rand-m9-mstd101-inc0"), 16, (0.5, 0.5, 0.5), seed=0)
    for step in range(20):  # uniform magnitudes reach Posterize's 0 bits, which Pillow refuses unless clamped
        weak.pixels(images, step, 0)


def test_finetune_with_the_recipe_is_deterministic_and_differs_from_without():
    d, train, test = _tiny()
    recipe = FinetuneAugment(auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)

    def run(r):
        torch.manual_seed(0)
        vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
        return finetune(vit, train, test, augment(d), steps=2, batch_size=16, device="cpu", recipe=r).history["loss"]

    with_recipe = run(recipe)
    assert with_recipe == run(recipe)
    assert with_recipe != run(None)  # control: the augmentations did change the batches


def test_eval_center_crop_is_resize_then_crop():
    d = DataParams(source="synthetic", image_size=8, to_rgb=False, mean=[0.0], std=[1.0])
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    aug = augment(d)
    assert torch.allclose(aug.eval(images), images.float() / 255, atol=1e-6)  # no crop: the image itself
    up = F.interpolate(images.float() / 255, size=16, mode="bilinear", align_corners=False)  # 8 / crop_pct 0.5
    assert torch.allclose(aug.eval(images, crop_pct=0.5), up[..., 4:12, 4:12], atol=1e-5)  # center 8 of 16
    assert not torch.allclose(aug.eval(images, crop_pct=0.5), aug.eval(images), atol=1e-2)
