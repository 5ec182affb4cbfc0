"""Teachers: the EfficientNet-Lite0 package weights map exactly onto timm's model and classify real photos
sensibly; features land on the student's token grid; weights load from files and fsspec URLs."""

from __future__ import annotations

import fsspec
import pytest
import timm
import torch

from mim.targets.teacher import Teacher, build_timm_teacher, lite0_weights_path, load_weights, map_by_order


@pytest.fixture(scope="module")
def lite0():
    return build_timm_teacher("efficientnet_lite0", "package", head=True)  # with its classifier, to classify


def test_lite0_key_mapping_is_exact(lite0):
    model, digest = lite0
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert len(source) == len(own) == 296 and len(digest) == 16
    for (src_key, src), (key, value) in zip(source.items(), own.items(), strict=True):
        assert torch.equal(src, value), f"{src_key} -> {key}"
    assert list(source)[0] == "_conv_stem.weight" and list(own)[0] == "conv_stem.weight"
    assert list(source)[-1] == "_fc.bias" and list(own)[-1] == "classifier.bias"


def _photos() -> torch.Tensor:
    from sklearn.datasets import load_sample_images  # two real photos shipped with scikit-learn

    images = [torch.tensor(im).permute(2, 0, 1).float() / 255 for im in load_sample_images().images]
    return torch.stack([torch.nn.functional.interpolate(im[None], size=224, mode="bilinear", antialias=True)[0]
                        for im in images])


def test_lite0_classifies_real_photos_sensibly(lite0):
    model, _ = lite0
    cfg = timm.data.resolve_data_config({}, model=model)
    x = (_photos() - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(torch.cat([x, x.flip(-1)])).softmax(-1)  # [4, 1000]: photos, then their mirror images
    top = probs.argmax(-1)
    assert torch.equal(top[:2], top[2:])  # a mirrored photo is the same thing
    assert top[0] != top[1]  # two different photos (a temple, a flower) are not
    assert probs[0].max() > 0.2  # confident, where random weights give ~1/1000
    assert "bell cote" in timm.data.ImageNetInfo().index_to_description(int(top[0]))  # the temple photo's roof


def test_teacher_features_on_the_student_grid(lite0):
    model, _ = lite0
    images = torch.randn(2, 3, 28, 28)
    pooled = Teacher(model, level=3, grid=(7, 7), student_mean=(0.5,) * 3, student_std=(0.5,) * 3)
    feats = pooled(images)  # level 3: 112 channels at 14x14, area-pooled to 7x7
    assert feats.shape == (2, 49, 112) and not feats.requires_grad
    assert torch.allclose(feats.mean(-1), torch.zeros(2, 49), atol=1e-4)  # per-token LayerNorm
    upsampled = Teacher(model, level=4, grid=(14, 14), student_mean=(0.5,) * 3, student_std=(0.5,) * 3,
                        token_norm=False)  # level 4: 320 channels at 7x7, interpolated up
    assert upsampled(images).shape == (2, 196, 320) and upsampled.dim == 320


def test_weights_from_files_and_urls(lite0, tmp_path):
    model, digest = lite0
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    teacher, same = build_timm_teacher("efficientnet_lite0", str(path))  # a teacher: the file's head is ignored
    assert len(teacher.state_dict()) == 294 and same == build_timm_teacher("efficientnet_lite0", "package")[1]
    assert build_timm_teacher("efficientnet_lite0", str(path), head=True)[1] == digest  # with the head: all 296
    with fsspec.open("memory://teachers/lite0.pth", "wb") as f:
        f.write(path.read_bytes())
    assert set(load_weights("memory://teachers/lite0.pth")) == set(model.state_dict())
    with pytest.raises(ValueError, match="lite0.pth: weights do not fit timm's mobilenetv3_small_050"):
        build_timm_teacher("mobilenetv3_small_050", str(path))


def test_mapping_by_order_names_the_misfit():
    with pytest.raises(ValueError, match=r"src: tensor b \[3\] does not fit y \[4\]"):
        map_by_order({"a": torch.zeros(2), "b": torch.zeros(3)}, ["x", "y"], [torch.Size([2]), torch.Size([4])],
                     "src")
    with pytest.raises(ValueError, match="src: 1 tensors, but the model has 2"):
        map_by_order({"a": torch.zeros(2)}, ["x", "y"], [torch.Size([2]), torch.Size([4])], "src")
