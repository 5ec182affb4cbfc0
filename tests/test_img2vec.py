"""Img2Vec: the teacher folder round trip (and its checks), a frozen teacher inside a training method, per-level
token diversity, encoders of ours as teachers, and the method's loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mim.analysis import diversity_by_level, token_diversity
from mim.models.export import export_encoder
from mim.models.vit import ViTSpec, build_vit
from mim.params import TeacherSpec
from mim.params.bind.data import augment as data_augment
from mim.params.bind.targets import teacher_source
from mim.rng import generator_for
from mim.targets.teacher import Teacher, TeacherSource, load_teacher_dir, teacher_manifest
from tests.helpers import build_method, pretrain, tiny_params, tiny_teacher_dir

STATS = {"student_mean": (0.5,) * 3, "student_std": (0.5,) * 3}
TINY_TEACHER = teacher_source(TeacherSpec(name="efficientnet_lite0", weights="random", level=1,
                                               input_size=32))  # 8x8 maps


def write_teacher_dir(folder: Path, spec: TeacherSource = TINY_TEACHER, grid: tuple[int, int] = (4, 4)) -> Path:
    teacher, digest = Teacher.from_spec(spec, grid, STATS["student_mean"], STATS["student_std"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(teacher_manifest(spec, teacher, digest)))
    return folder


@pytest.fixture(scope="module")
def teacher_dir() -> Path:
    return tiny_teacher_dir()


def img2vec_params(teacher_dir: Path, **extra):
    return tiny_params("img2vec", method__teacher=str(teacher_dir), **extra)


def test_teacher_folder_round_trip_and_checks(teacher_dir, tmp_path):
    teacher, manifest = load_teacher_dir(str(teacher_dir), (4, 4), **STATS)
    assert manifest["grid"] == [4, 4] and manifest["feature_dim"] == teacher.dim == 24  # Lite0 level 1: 24 channels
    assert manifest["source"] == "timm:efficientnet_lite0 weights=random"
    with pytest.raises(ValueError, match=r"on a \[4, 4\] grid but the student's tokens are on \[7, 7\]"):
        load_teacher_dir(str(teacher_dir), (7, 7), **STATS)
    with pytest.raises(FileNotFoundError, match="no teacher there; run `mim teacher`"):
        load_teacher_dir(str(tmp_path / "none"), (4, 4), **STATS)
    stale = write_teacher_dir(tmp_path / "stale")
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps({**manifest, "weights_digest": "0" * 16}))
    with pytest.raises(ValueError, match="the teacher's weights changed since `mim teacher` recorded them"):
        load_teacher_dir(str(stale), (4, 4), **STATS)


def test_random_teachers_are_seeded_and_levels_are_checked():
    _, a = Teacher.from_spec(TINY_TEACHER, (4, 4), **STATS)
    _, b = Teacher.from_spec(TINY_TEACHER, (4, 4), **STATS)
    assert a == b
    with pytest.raises(ValueError, match=r"teacher level 7 does not exist: the model has levels 0..4"):
        Teacher.from_spec(replace(TINY_TEACHER, level=7), (4, 4), **STATS)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    teacher, _ = Teacher.from_spec(TINY_TEACHER, (4, 4), **STATS)
    state = dict(teacher.model.state_dict())
    state.pop("conv_stem.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    spec = replace(TINY_TEACHER, weights=str(tmp_path / "w.pth"))
    with pytest.raises(ValueError, match=r"missing \['conv_stem.weight'\], unexpected \['extra.weight'\]"):
        Teacher.from_spec(spec, (4, 4), **STATS)


def test_an_encoder_of_ours_is_a_teacher_on_every_block(tmp_path):
    torch.manual_seed(0)
    encoder = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2))
    export_encoder(encoder, str(tmp_path / "encoder.safetensors"))
    spec = TeacherSpec(kind="encoder", weights=str(tmp_path / "encoder.safetensors"), level=2, input_size=None,
                       token_norm=False)
    teacher, _ = Teacher.from_spec(teacher_source(spec), (4, 4), **STATS)
    images = torch.randn(3, 3, 16, 16)
    levels = teacher.levels(images)
    assert teacher.input_size == 16 and len(levels) == 3 and all(f.shape == (3, 16, 32) for f in levels)
    expected = encoder.eval().forward_intermediates(images, indices=[2], intermediates_only=True)[0]
    assert torch.allclose(teacher(images), expected.flatten(2).transpose(1, 2), atol=1e-5)  # the student's stats
    summaries = diversity_by_level(teacher.levels, images, batch_size=2)  # batches of 2 + 1
    for summary, feats in zip(summaries, levels, strict=True):
        assert summary["images"] == 3 and summary["mean"] == pytest.approx(float(token_diversity(feats).mean()))
    with pytest.raises(ValueError, match="kind encoder needs weights: the path of an exported encoder"):
        TeacherSpec(kind="encoder", weights="random")


def test_img2vec_regresses_teacher_features_of_masked_tokens(teacher_dir):
    torch.manual_seed(0)
    method = build_method(img2vec_params(teacher_dir))
    method.train()
    assert not method.teacher.training and not method.teacher.model.training  # frozen BatchNorm statistics
    images = torch.randn(4, 3, 16, 16)
    mask = method.sample_masks(4, generator_for(0, "m"))
    target = method.target(images)
    assert target.shape == (4, 16, 24) and not target.requires_grad
    out = method({"images": images, "mask": mask})
    out["loss"].backward()
    assert set(out["logs"]) == {"loss_feature", "feature_cos"}
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        masked_only = method.per_token_loss(method.predict(images, mask), target)  # [B, N]
    expected = float((masked_only * mask.mask).sum() / mask.mask.sum())
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    panels = method.reconstruct({"images": images, "mask": mask})
    assert set(panels) == {"input", "teacher features", "prediction"}
    assert all(v.shape == images.shape for v in panels.values())


def test_img2vec_rejects_a_teacher_on_another_grid(tmp_path):
    folder = write_teacher_dir(tmp_path / "t8", grid=(8, 8))
    with pytest.raises(ValueError, match=r"on a \[8, 8\] grid but the student's tokens are on \[4, 4\]"):
        build_method(img2vec_params(folder))


@pytest.mark.slow
def test_img2vec_loss_decreases_and_the_teacher_stays_frozen(teacher_dir, tmp_path):
    params = img2vec_params(teacher_dir, train__steps=30, optim__base_lr=3e-3, data__source="synthetic:256")
    before = {k: v.clone() for k, v in build_method(params).teacher.state_dict().items()}
    result = pretrain(params, str(tmp_path / "run"))
    losses = result.history["loss"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    after = {k.removeprefix("teacher."): v for k, v in ckpt.items() if k.startswith("teacher.")}
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_cached_teacher_features_are_the_ones_each_training_batch_would_compute(teacher_dir, tmp_path):
    from mim.data import load_dataset
    from tests.helpers import make_trainer

    params = img2vec_params(teacher_dir, **{"data.augment.scale": "[1.0, 1.0]", "data.augment.hflip": 0.5,
                                            "method.teacher_cache": "always"})
    data = load_dataset("synthetic:128", size=16)
    trainer = make_trainer(build_method(params), data, params, str(tmp_path / "run"))
    method = trainer.method
    assert method.cache is not None and method.cache.features.shape == (128, 2, 16, 24)  # whole and mirrored
    flips = 0
    for step in range(3):
        for batch in trainer.batch_for_step(step):
            flips += int(batch["flip"].sum())
            on_the_fly = method.target(batch["images"])
            assert torch.allclose(method.cache.lookup(batch["indices"], batch["flip"]), on_the_fly, atol=2e-3)
            with torch.no_grad():
                with_cache = method(batch)["loss"]
                method.cache, cache = None, method.cache
                assert float(with_cache) == pytest.approx(float(method(batch)["loss"]), abs=1e-3)
                method.cache = cache
    assert 0 < flips < 3 * 16  # both orientations were looked up


def test_teacher_cache_is_skipped_or_refused_when_crops_change_the_input(teacher_dir, tmp_path):
    from mim.params import PretrainParams, load_params
    from tests.helpers import tiny_overrides

    images = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    params = img2vec_params(teacher_dir)  # the default augmentation: random-resized crops
    method, augment = build_method(params), data_augment(params.data)
    method.teacher_cache = "auto"
    method.prepare_data(images, augment, torch.device("cpu"))
    assert method.cache is None
    method.teacher_cache = "always"
    with pytest.raises(ValueError, match=r"teacher_cache is 'always', but data.augment.scale is \[0.35, 1.0\]"):
        method.prepare_data(images, augment, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"method.teacher_cache 'always' needs whole training images"):
        load_params(PretrainParams, None, tiny_overrides("img2vec", **{"method.teacher_cache": "always"}))
