"""Bad data and params inputs, as a user makes them: each gives one clear line (no traceback) and its exit code,
and nothing silently wrong (docs/faults.md, "Data and params")."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mim.cli.main import main
from tests.helpers import ROOT

TINY_MODEL = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "method.decoder.embed_dim=32",
              "method.decoder.depth=1", "method.decoder.num_heads=2", "train.batch_size=8", "train.steps=1",
              "train.log_every_steps=1"]
COLOURS = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}  # class -> the colour of its images


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def mim(capsys, *args: str) -> tuple[int, str]:
    """`mim ARGS` in this process: (exit code, what it printed on stderr)."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def one_line_error(err: str, *parts: str) -> str:
    """The `mim <command>: ...` line of `err`, after checking there is no traceback and it names every part."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("mim ")]
    assert len(lines) == 1, err
    for part in parts:
        assert part in err, f"{part!r} not in {err!r}"
    return lines[0]


def class_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    """`root/<class>/<i>.png`, 16 px, every image of a class in its colour (so a label can be checked)."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), COLOURS[name]).save(root / name / f"{i}.png")
    return root


def params_dir(tmp_path: Path, data: str, **files: str) -> Path:
    """A params folder: the shipped files, `data.yaml` replaced by `data`, and `files` ({stem: text})."""
    folder = tmp_path / "params"
    shutil.copytree(ROOT / "params", folder, ignore=shutil.ignore_patterns("sets"))
    (folder / "data.yaml").write_text(data)
    for stem, text in files.items():
        (folder / f"{stem}.yaml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    """A tiny exported ViT encoder (16 px, patch 4) whose metadata says it was trained on a folder that does not
    exist (if evaluation read it, it would fail)."""
    from mim.models.export import export_encoder
    from mim.models.vit import ViTSpec

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "encoder.safetensors"
    encoder = ViTSpec(size="micro", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2).build()
    trained_on = {"source": str(path.parent / "not-here"), "image_size": 16}
    export_encoder(encoder, str(path), extra={"data": json.dumps(trained_on)})
    return path


@pytest.fixture
def no_tracking(monkeypatch, tmp_path):
    monkeypatch.setenv("MIM_TRACKING", "off")
    monkeypatch.chdir(tmp_path)


# Item 1: a folder without train/ and test/ is never both splits; class lists aligned by name ---------------------

@pytest.mark.parametrize("form", ["prepare", "prepare-shards", "pretrain-one-off", "evaluate-encoder"])
def test_a_folder_without_split_folders_is_never_used_as_both_splits(form, tmp_path, capsys, no_tracking,
                                                                      encoder_file):
    flat = class_folder(tmp_path / "flat", ["a", "b"])
    storage = "storage: shards\n" if form == "prepare-shards" else ""  # the stage form takes no --set
    params = params_dir(tmp_path, f"source: {flat}\nimage_size: 16\n{storage}")
    args = {"prepare": ["prepare", "--params-dir", str(params)],
            "prepare-shards": ["prepare", "--params-dir", str(params)],
            "pretrain-one-off": ["pretrain", "--method", "mae", "--params-dir", str(params), "--out",
                                 str(tmp_path / "run"), *sets(*TINY_MODEL)],
            "evaluate-encoder": ["evaluate", "--encoder", str(encoder_file), "--params-dir", str(params)]}[form]
    code, err = mim(capsys, *args)
    assert code == 1
    line = one_line_error(err, f"image folder '{flat}' has no 'train' sub-folder (it has: a, b)")
    assert "'.' for a folder that is itself one split" in line
    assert not (tmp_path / "data" / "prepared" / "manifest.json").exists()


def test_labels_are_aligned_by_class_name_across_splits(tmp_path, no_tracking):
    """The test split lacks class b: its c images keep label 2 (the train split's), in both storage forms."""
    from mim.data.prepared import load_prepared
    from mim.params import DataParams
    from mim.params.bind.data import prepare

    source = tmp_path / "photos"
    class_folder(source / "train", ["a", "b", "c"])
    class_folder(source / "test", ["a", "c"])
    for storage in ("array", "shards"):
        root = tmp_path / storage
        root.mkdir()
        prepare(DataParams(source=str(source), image_size=16, storage=storage), str(root))
        test = load_prepared(root, "test")
        assert test.classes == ["a", "b", "c"]
        blue = test.images[:, 2, 8, 8] > 200  # class c's images
        assert blue.sum() == 2 and (test.labels[blue] == 2).all() and (test.labels[~blue] == 0).all()


def test_a_test_class_the_training_split_lacks_is_an_error(tmp_path, capsys, no_tracking):
    source = tmp_path / "photos"
    class_folder(source / "train", ["a", "b"])
    class_folder(source / "test", ["a", "c"])
    code, err = mim(capsys, "prepare", "--params-dir", str(params_dir(tmp_path, f"source: {source}\nimage_size: 16\n")))
    assert code == 1
    one_line_error(err, f"image folder '{source}/test' has class folder(s) c that the split 'train' of {source} "
                   "lacks")


# Item 1: a device asked for by name is a requirement -------------------------------------------------------------

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")


@needs_no_gpu
def test_train_device_cuda_without_a_gpu_is_an_error(tmp_path, capsys):
    params = params_dir(tmp_path, "source: synthetic:16\nimage_size: 16\n")
    code, err = mim(capsys, "pretrain", "--method", "mae", "--params-dir", str(params), "--out", str(tmp_path / "o"),
                    *sets(*TINY_MODEL, "train.device=cuda"))
    assert code == 1
    one_line_error(err, "train.device=cuda but no CUDA device is visible", "set train.device to auto")
    assert not (tmp_path / "o" / "encoder.safetensors").exists()


@needs_no_gpu
def test_eval_device_cuda_without_a_gpu_is_an_error(tmp_path, capsys, encoder_file):
    params = params_dir(tmp_path, "source: synthetic:16\nimage_size: 16\n")
    code, err = mim(capsys, "evaluate", "--encoder", str(encoder_file), "--params-dir", str(params),
                    *sets("device=cuda"))
    assert code == 1
    one_line_error(err, "eval.device=cuda but no CUDA device is visible")


@needs_no_gpu
def test_finetune_device_cuda_without_a_gpu_is_an_error():
    from mim.data import BatchAugment, ImageTensors
    from mim.engine.runtime import DeviceError
    from mim.evaluation.finetune import finetune

    data = ImageTensors(images=torch.zeros(4, 3, 16, 16, dtype=torch.uint8), labels=torch.tensor([0, 1, 0, 1]),
                        classes=["x", "y"], source="zeros")
    with pytest.raises(DeviceError, match=r"^finetune.device=cuda but no CUDA device is visible"):
        finetune(torch.nn.Identity(), data, data, BatchAugment(out_size=16), device="cuda")


@needs_no_gpu
def test_auto_says_in_one_line_that_it_falls_back_to_the_cpu(caplog):
    from mim.engine.runtime import resolve_device

    with caplog.at_level(logging.INFO, logger="mim"):
        assert resolve_device("auto", param="faults.device") == torch.device("cpu")
        resolve_device("auto", param="faults.device")
    said = [r.getMessage() for r in caplog.records if "faults.device" in r.getMessage()]
    assert said == ["faults.device=auto: no CUDA device visible, running on the CPU"]


# Item 1: the one-off form reads params/data.yaml as the stage form does ----------------------------------------

def test_the_one_off_pretrain_reads_data_yaml(tmp_path, capsys):
    params = params_dir(tmp_path, "source: synthetic:24\nimage_size: 16\nseed: 3\n")
    out = tmp_path / "run"
    code, err = mim(capsys, "pretrain", "--method", "mae", "--params-dir", str(params), "--out", str(out),
                    *sets(*TINY_MODEL))
    assert code == 0, err
    data = json.loads((out / "params.json").read_text())["data"]
    assert (data["source"], data["image_size"], data["seed"]) == ("synthetic:24", 16, 3)


def test_a_params_files_data_section_wins_over_data_yaml_key_by_key(tmp_path):
    from mim.params import load_one_off

    params = params_dir(tmp_path, "source: synthetic:24\nimage_size: 16\nseed: 3\n")
    own = tmp_path / "run.yaml"
    own.write_text("method: {name: simmim, mask_unit_size: 8}\ndata: {seed: 5}\n")
    resolved = load_one_off(params, None, own, ["data.image_size=32"])
    assert resolved.method.name == "simmim" and resolved.method.mask_unit_size == 8
    assert (resolved.data.source, resolved.data.seed, resolved.data.image_size) == ("synthetic:24", 5, 32)


def test_pretrain_help_states_the_one_rule(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Both forms read their params by one rule: the data is PARAMS_DIR/data.yaml" in text


# Item 5: shape errors in params files -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("method: mae\n", "method: expected a section (indented key: value lines under it), got the value 'mae'; "
                      "write `method: {name: mae}`"),
    ("- 1\n- 2\n", "expected a mapping (key: value lines) at the top level, got the list [1, 2]"),
    ("", "the params file is empty"),
    ("train:\n  steps: 3\n   epochs: 1\n", "line 3, column 10: not valid YAML: mapping values are not allowed here"),
    ("train:\n  steps: 3\nmodel: {patch_size: 4}\ntrain:\n  epochs: 1\n",
     "line 4, column 1: not valid YAML: key 'train' given twice in one section (also on line 1); the second would "
     "silently win"),
])
def test_a_params_file_of_the_wrong_shape_is_one_line(text, expected, tmp_path, capsys):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    code, err = mim(capsys, "pretrain", "--method", "mae", "--params", str(f), "--out", str(tmp_path / "o"))
    assert code == 2
    one_line_error(err, str(f), expected)


def test_a_scalar_or_list_section_in_a_params_dir_names_file_and_key(tmp_path, capsys):
    params = params_dir(tmp_path, "augment: [0.5, 1.0]\n", mae="method: mae\n")
    code, err = mim(capsys, "params", "check", "--dir", str(params))
    assert code == 2 and "Traceback" not in err
    assert f"{params}/data.yaml: augment: expected a section" in err
    assert f"{params}/mae.yaml: method: expected a section" in err


# Item 6: cross-file constraints, YAML 1.1 booleans, all-or-nothing edits ---------------------------------------

@pytest.mark.parametrize(("files", "expected"), [
    ({"simmim": "method: {mask_unit_size: 8}\nmodel: {patch_size: 4}\n"},
     "simmim.yaml: method.mask_unit_size 8 does not divide data.image_size 28 ({dir}/data.yaml)"),
    ({"mae": "model: {patch_size: 8}\n"}, "mae.yaml: model.patch_size 8 does not divide data.image_size 28"),
    ({"tokenizer": "patch_size: 7\n"},
     "ccvit.yaml: model.patch_size 4 differs from patch_size 7 in {dir}/tokenizer.yaml"),
    ({"mae": "train: {batch_size: 250, accum_steps: 4}\n"},
     "mae.yaml: train.batch_size 250 is not divisible by launcher.nproc_per_node 1 x launcher.nnodes 1 x "
     "train.accum_steps 4 = 4"),
    ({"mixmim": "model: {arch: hier, patch_size: 2}\ntrain: {batch_size: 6, accum_steps: 2}\n"},
     "mixmim.yaml: MixMIM pairs sample i with sample B-1-i, so each micro-batch must be even"),
])
def test_cross_file_constraints_name_both_files(files, expected, tmp_path, capsys):
    params = params_dir(tmp_path, "image_size: 28\n", **files)
    code, err = mim(capsys, "params", "check", "--dir", str(params))
    assert code == 2 and "Traceback" not in err
    assert expected.format(dir=params) in err


def test_a_stage_fails_early_with_the_same_line(tmp_path, capsys):
    params = params_dir(tmp_path, "image_size: 28\n", simmim="method: {mask_unit_size: 8}\n")
    code, err = mim(capsys, "pretrain", "--method", "simmim", "--seed", "0", "--params-dir", str(params))
    assert code == 2 and "Traceback" not in err
    assert f"{params}/simmim.yaml: method.mask_unit_size 8 does not divide data.image_size 28 " \
           f"({params}/data.yaml)" in err


@pytest.mark.parametrize(("line", "expected"), [
    ("amp: off", None),  # off can only mean "off": taken as the word
    ("amp: yes", "train: amp: YAML reads an unquoted on, yes or true as the boolean true, but amp takes one of "
                 "'auto', 'bf16', 'fp16', 'off'; quote the word"),
    ("device: no", "train: device: YAML reads an unquoted off, no or false as the boolean false, but device takes "
                   "one of 'auto', 'cpu', 'cuda'"),
    ("seed: no", "train: seed: YAML reads an unquoted off, no or false as the boolean false, but seed takes a "
                 "number; give a number"),  # pydantic alone would read it as 0
])
def test_yaml_booleans_where_a_word_is_expected(line, expected, tmp_path, capsys):
    from mim.params import load_file

    params = params_dir(tmp_path, "image_size: 28\n")
    (params / "mae.yaml").write_text(f"train:\n  {line}\n")
    if expected is None:
        assert load_file(params / "mae.yaml").train.amp == "off"
        return
    code, err = mim(capsys, "params", "check", "--dir", str(params))
    assert code == 2 and "Traceback" not in err and expected in err


def test_a_flow_edit_across_files_is_all_or_nothing(tmp_path):
    from mim.params import ParamsError
    from mim.params.edit import edit_files

    params = params_dir(tmp_path, (ROOT / "params" / "data.yaml").read_text())
    before = {f.name: f.read_bytes() for f in params.glob("*.yaml")}
    with pytest.raises(ParamsError, match=r"(?s)no file changed.*mae.yaml: train.batch_size"):
        edit_files(params, {"data": {"subset": 100}, "mae": {"train.batch_size": 0}})
    with pytest.raises(ParamsError, match=r"mae.yaml: train.batch_size 250 is not divisible"):
        edit_files(params, {"data": {"subset": 100}, "mae": {"train.batch_size": 250, "train.accum_steps": 4}})
    assert {f.name: f.read_bytes() for f in params.glob("*.yaml")} == before
    assert edit_files(params, {"data": {"subset": 100}, "mae": {"train.steps": 5}}) == [
        ("data", "subset"), ("mae", "train.steps")]
    assert "subset: 100 " in (params / "data.yaml").read_text()  # comments kept


# Item 7: untrusted files -------------------------------------------------------------------------------------

def forged_encoder(path: Path, arch: str, spec: dict) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "mim-encoder/1", "arch": arch,
                                                          "spec": json.dumps(spec)})
    return path


@pytest.mark.parametrize(("arch", "spec", "expected"), [
    ("cnn", {"name": "resnet10t", "kwargs": {"checkpoint_path": "/etc/passwd"}}, "kwargs.checkpoint_path: not "
     "an allowed timm.create_model argument"),
    ("cnn", {"name": "resnet10t", "kwargs": {"pretrained": True}}, "kwargs.pretrained: not an allowed"),
    ("cnn", {"name": "resnet10t", "kwargs": {"pretrained_cfg_overlay": {"file": "/tmp/x.pth"}}},
     "kwargs.pretrained_cfg_overlay: not an allowed"),
    ("cnn", {"name": "hf-hub:someone/model"}, "name 'hf-hub:someone/model': a timm architecture name is "
     "expected"),
    ("vit", {"img_size": 16, "checkpoint_path": "/etc/passwd"}, "metadata spec key 'checkpoint_path' is not one "
     "mim writes"),
])
def test_an_encoder_files_metadata_cannot_pass_timm_arguments(arch, spec, expected, tmp_path, capsys):
    path = forged_encoder(tmp_path / "forged.safetensors", arch, spec)
    params = params_dir(tmp_path, "source: synthetic:16\nimage_size: 16\n")
    code, err = mim(capsys, "evaluate", "--encoder", str(path), "--params-dir", str(params))
    assert code == 1
    one_line_error(err, str(path), expected)


def test_evaluate_never_reads_the_data_source_of_the_encoder_file(tmp_path, capsys, caplog, encoder_file):
    params = params_dir(tmp_path, "source: synthetic:32\nimage_size: 16\n")
    out = tmp_path / "eval.json"
    with caplog.at_level(logging.INFO, logger="mim"):
        code, err = mim(capsys, "evaluate", "--encoder", str(encoder_file), "--params-dir", str(params), "--out",
                        str(out), *sets("linear.epochs=1", "knn.k=3"))
    assert code == 0, err
    assert set(json.loads(out.read_text())) == {"encoder"}
    said = [r.getMessage() for r in caplog.records if "was trained on" in r.getMessage()]
    assert said == [f"{encoder_file} was trained on {encoder_file.parent}/not-here at 16 px; evaluating on "
                    "synthetic:32 at 16 px (params/data.yaml and --set data.*, never the file's metadata)"]


def test_teacher_weights_are_verified_against_their_sha256(encoder_file):
    import hashlib

    from mim.params import ParamsError, load_params
    from mim.params.targets import TeacherParams
    from mim.targets.teacher import DigestMismatchError, build_teacher_model

    right = hashlib.sha256(encoder_file.read_bytes()).hexdigest()
    wrong = "0" * 64
    model, _, _ = build_teacher_model("encoder", "", str(encoder_file), sha256=right)
    assert model is not None
    with pytest.raises(DigestMismatchError) as err:
        build_teacher_model("encoder", "", str(encoder_file), sha256=wrong)
    assert str(err.value).startswith(f"{encoder_file}: sha256 is {right} but {wrong} is expected")
    with pytest.raises(DigestMismatchError, match=f"sha256 is {right}"):
        from mim.targets.teacher import load_weights

        load_weights(str(encoder_file), wrong)
    with pytest.raises(ParamsError, match="sha256 verifies a weights file, but weights is 'random'"):
        load_params(TeacherParams, None, ["weights=random", f"sha256={right}"])


