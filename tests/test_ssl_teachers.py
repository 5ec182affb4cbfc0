"""Self-supervised teachers for Img2Vec: an encoder of ours gives its last block on the student's token grid (the
same tensor as its own `forward_intermediates`), a headless timm ResNet checkpoint (as MoCo/DINO/SimCLR save
them, without `fc.*`) loads, a supervised file's head is ignored with a log line, a checkpoint that does not fit
fails with one line naming the file; the diversity models say which are supervised; the teacher stage refuses
a project file dvc.yaml does not list as its dep."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import replace

import pytest
import timm
import torch
import yaml

from mim.models.export import export_encoder
from mim.models.vit import ViTSpec, build_vit
from mim.params import DiversityParams, TeacherSpec
from mim.params.bind.targets import teacher_source
from mim.params.targets import DiversityModel
from mim.targets.teacher import DigestMismatchError, Teacher, TeacherSource, load_teacher_dir, teacher_manifest
from tests.helpers import ROOT, build_method, tiny_params

STATS = {"student_mean": (0.5,) * 3, "student_std": (0.5,) * 3}


def test_an_encoder_of_ours_teaches_img2vec_with_its_last_block(tmp_path):
    torch.manual_seed(0)
    encoder = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)).eval()
    export_encoder(encoder, str(tmp_path / "encoder.safetensors"))
    spec = teacher_source(TeacherSpec(kind="encoder", weights=str(tmp_path / "encoder.safetensors"), level=-1,
                                      input_size=None, token_norm=False))
    teacher, digest = Teacher.from_spec(spec, (4, 4), **STATS)
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(teacher_manifest(spec, teacher, digest)))
    method = build_method(tiny_params("img2vec", method__teacher=str(folder)))  # 16 px, 4-px patches: 4x4 tokens
    images = torch.randn(2, 3, 16, 16)
    last = encoder.forward_intermediates(images, indices=[2], intermediates_only=True)[0]  # [2, 32, 4, 4]
    expected = last.flatten(2).transpose(1, 2)  # [2, 16, 32]: the student's stats are the encoder's own
    assert teacher.level == 2 and teacher(images).shape == (2, 16, 32)
    assert torch.allclose(teacher(images), expected, atol=1e-5)
    assert torch.allclose(method.target(images), expected, atol=1e-5)  # what Img2Vec regresses
    assert not torch.allclose(teacher.levels(images)[1], expected, atol=1e-2)  # control: another block differs
    rebuilt, manifest = load_teacher_dir(str(folder), (4, 4), **STATS)
    assert manifest["level"] == -1 and manifest["feature_dim"] == 32 and rebuilt.level == 2
    with pytest.raises(ValueError, match=r"teacher level -4 does not exist: the model has levels 0..2"):
        Teacher.from_spec(replace(spec, level=-4), (4, 4), **STATS)


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    """A headless resnet10t state dict (as self-supervised checkpoints come) and the same with a classifier."""
    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(1)
    body = timm.create_model("resnet10t", num_classes=0).eval()
    state = body.state_dict()
    assert not any(k.startswith("fc.") for k in state)
    torch.save(state, folder / "ssl.pth")
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, folder / "sup.pth")
    return body, folder


def resnet_teacher(path, **kw) -> TeacherSource:
    return TeacherSource(kind="timm", name=kw.pop("name", "resnet10t"), weights=str(path), level=-1, input_size=32,
                         token_norm=False, **kw)


def test_a_headless_resnet_checkpoint_is_a_teacher(resnet_files, caplog):
    body, folder = resnet_files
    sha = hashlib.sha256((folder / "ssl.pth").read_bytes()).hexdigest()
    teacher, digest = Teacher.from_spec(resnet_teacher(folder / "ssl.pth", sha256=sha), (4, 4), **STATS)
    images = torch.randn(2, 3, 16, 16)
    pixels = torch.nn.functional.interpolate(images * 0.5 + 0.5, size=32, mode="bilinear", antialias=True)
    cfg = timm.data.resolve_data_config({}, model=body)  # the teacher's own ImageNet statistics
    x = (pixels - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        last = body.forward_intermediates(x, indices=[4], intermediates_only=True)[0]  # [2, 512, 1, 1] at 32 px
    expected = torch.nn.functional.interpolate(last, size=(4, 4), mode="bilinear").flatten(2).transpose(1, 2)
    assert teacher(images).shape == (2, 16, 512)
    assert torch.allclose(teacher(images), expected, atol=1e-4)
    with caplog.at_level(logging.INFO, logger="mim.teacher"):
        _, with_head = Teacher.from_spec(resnet_teacher(folder / "sup.pth"), (4, 4), **STATS)
    assert with_head == digest  # the head is not part of the teacher
    assert any("sup.pth: ignoring the classifier head fc.weight, fc.bias" in r.getMessage() for r in caplog.records)
    with pytest.raises(DigestMismatchError, match="ssl.pth: sha256 is"):
        Teacher.from_spec(resnet_teacher(folder / "ssl.pth", sha256="0" * 64), (4, 4), **STATS)


def test_a_checkpoint_that_does_not_fit_fails_with_one_line_naming_the_file(resnet_files, tmp_path):
    body, folder = resnet_files
    moco = {f"module.encoder_q.{k}": v for k, v in body.state_dict().items()}  # MoCo's prefix, not stripped
    torch.save(moco, tmp_path / "moco.pth")
    for path, name, words in ((tmp_path / "moco.pth", "resnet10t", "missing ['conv1.0.weight'"),
                              (folder / "ssl.pth", "resnet14t", "tensors of another shape")):
        with pytest.raises(ValueError) as err:
            Teacher.from_spec(resnet_teacher(path, name=name), (4, 4), **STATS)
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"{path}: weights do not fit timm's {name}") and words in line


def test_diversity_models_are_labeled_supervised_or_self_supervised():
    params = DiversityParams(**yaml.safe_load((ROOT / "params" / "diversity.yaml").read_text()))
    labels = {k: m.trained_by() for k, m in params.models.items()}
    assert labels["lite0-imagenet"] == "supervised" and labels["mae-encoder"] == "self-supervised"
    assert labels["lite0-random"] == "random"
    assert DiversityModel(kind="encoder", weights="e.safetensors").trained_by() == "self-supervised"  # inferred
    stated = DiversityModel(name="resnet50", weights="dino.pth", supervision="self-supervised")
    assert stated.trained_by() == "self-supervised"
    with pytest.raises(ValueError, match="supervision: say whether weights 'dino.pth' were trained with labels"):
        DiversityModel(name="resnet50", weights="dino.pth")  # a file can be either: it must be said


def test_the_teacher_stage_refuses_an_encoder_dvc_yaml_does_not_list(tmp_path, monkeypatch):
    from mim.project.graph import undeclared_dep
    from mim.stages import teacher as stage

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    encoder = "models/mae/encoder.safetensors"
    assert undeclared_dep(tmp_path, "teacher", encoder) and not undeclared_dep(tmp_path, "teacher", "s3://b/e.pth")
    with pytest.raises(ValueError, match=f"teacher weights {encoder}: add it to the teacher stage's deps in dvc.yaml"):
        stage.run("params", ["kind=encoder", f"weights={encoder}"])
    spec = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    spec["stages"]["teacher"]["deps"].append(encoder)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert not undeclared_dep(tmp_path, "teacher", encoder)  # control: once listed, the stage goes on
    assert not undeclared_dep(tmp_path, "teacher", "data/prepared/x.pth")  # ... and a file in a listed folder
