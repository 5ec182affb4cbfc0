"""The params directory: every file validated against its model; errors name file, dotted field and reason."""

from __future__ import annotations

import shutil

import pytest

from mim.params import ParamsError, RecipeParams, check_dir, load_file, load_pretrain
from mim.params.edit import edit_yaml_text
from tests.helpers import ROOT, run_mim


@pytest.fixture
def params_dir(tmp_path):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    return tmp_path / "params"


def _edit(params_dir, name: str, updates: dict) -> None:
    path = params_dir / f"{name}.yaml"
    path.write_text(edit_yaml_text(path.read_text(), updates)[0])


def test_shipped_params_validate_and_compose():
    valid = check_dir(ROOT / "params")
    assert isinstance(valid["mae"], RecipeParams) and valid["mae"].method.name == "mae"
    p = load_pretrain(ROOT / "params", "simmim", ["train.steps=7", "data.subset=100"])
    assert p.method.name == "simmim" and p.train.steps == 7 and p.data.subset == 100
    assert p.data.source == "fashion-mnist" and p.recipe() == valid["simmim"].model_copy(
        update={"train": valid["simmim"].train.model_copy(update={"steps": 7})})


@pytest.mark.parametrize("name, updates, field, reason", [
    ("data", {"image_size": -4}, "image_size", "greater than 0"),
    ("data", {"augment.scale": [0.9, 0.1]}, "augment", "scale must be (low, high)"),
    ("eval", {"knn.k": 0}, "knn.k", "greater than 0"),
    ("eval", {"pool": "max"}, "pool", "'cls' or 'mean'"),
    ("mae", {"method.mask_ratio": 1.0}, "method.mask_ratio", "less than 1"),
    ("mae", {"optim.lr": 0.1}, "optim.lr", "Extra inputs are not permitted"),
    ("simmim", {"launcher.nproc_per_node": "all"}, "launcher.nproc_per_node", "'auto'"),
    ("simmim", {"method.decoder": {"depth": 1}}, "method.decoder", "Extra inputs"),
])
def test_bad_values_fail_naming_file_field_and_reason(params_dir, name, updates, field, reason):
    _edit(params_dir, name, updates)
    with pytest.raises(ParamsError) as err:
        check_dir(params_dir)
    msg = str(err.value)
    assert f"{params_dir / name}.yaml: {field}:" in msg and reason in msg


def test_every_bad_file_is_reported_at_once(params_dir):
    _edit(params_dir, "data", {"image_size": 0})
    _edit(params_dir, "mae", {"train.batch_size": 0})
    (params_dir / "eval.yaml").unlink()
    with pytest.raises(ParamsError) as err:
        check_dir(params_dir)
    msg = str(err.value)
    assert "data.yaml: image_size" in msg and "mae.yaml: train.batch_size" in msg
    assert "eval.yaml: params file not found" in msg


def test_method_file_must_hold_its_own_method(params_dir):
    _edit(params_dir, "simmim", {"method.name": "mae"})
    with pytest.raises(ParamsError, match=r"simmim.yaml: method.name: is 'mae' but this file is the 'simmim' recipe"):
        check_dir(params_dir)


def test_unknown_params_file_is_an_error(params_dir):
    (params_dir / "dino.yaml").write_text("method: {name: dino}\n")
    with pytest.raises(ParamsError, match="dino.yaml: method.name: 'dino' is not a method; a recipe file is named"):
        check_dir(params_dir)
    (params_dir / "dino.yaml").write_text("train: {epochs: 1}\n")
    with pytest.raises(ParamsError, match="dino.yaml: method.name: missing; a recipe file is named after its method"):
        check_dir(params_dir)


def test_a_variant_recipe_names_its_method(params_dir):
    (params_dir / "mae-long.yaml").write_text("method: {name: mae}\ntrain: {epochs: 9}\n")
    recipe = check_dir(params_dir)["mae-long"]
    assert recipe.method.name == "mae" and recipe.train.epochs == 9


def test_edit_keeps_comments_and_reports_changes():
    text = "a: 1  # one\nb:\n  c: 2 # two\n"
    out, changed = edit_yaml_text(text, {"a": 1, "b.c": 3, "b.d": None})
    assert changed == ["b.c", "b.d"]
    assert "# one" in out and "c: 3 # two" in out and "d:" in out


def test_cli_params_check_and_show(params_dir):
    ok = run_mim("params", "check", "--dir", str(params_dir))
    assert ok.returncode == 0 and f"{len(list(params_dir.glob('*.yaml')))} params files valid" in ok.stdout
    shown = run_mim("params", "show", "mae", "--dir", str(params_dir))
    assert shown.returncode == 0 and "norm_eps: 1.0e-06" in shown.stdout  # a default the file does not spell out
    _edit(params_dir, "eval", {"linear.epochs": "many"})
    bad = run_mim("params", "check", "--dir", str(params_dir))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"{params_dir}/eval.yaml: linear.epochs: Input should be a valid integer" in bad.stderr


def test_stage_command_fails_fast_on_bad_params(params_dir, tmp_path):
    _edit(params_dir, "mae", {"train.stepz": 3})
    r = run_mim("pretrain", "--method", "mae", "--seed", "0", "--params-dir", str(params_dir),
                env={"MIM_TRACKING": "off"})
    assert r.returncode == 2 and f"{params_dir}/mae.yaml: train.stepz: Extra inputs are not permitted" in r.stderr


def test_token_grid_names_the_field_that_does_not_tile():
    from mim.params import DataParams

    assert DataParams(image_size=28).token_grid(4, "tokenizer.patch_size") == (7, 7)
    with pytest.raises(ValueError, match="tokenizer.patch_size 8 does not divide data.image_size 28"):
        DataParams(image_size=28).token_grid(8, "tokenizer.patch_size")


def test_the_cpu_demo_set_is_the_default_params():
    """`mim params use cpu-demo` restores exactly what the repository ships in params/."""
    shipped = {p.name: p.read_text() for p in (ROOT / "params").glob("*.yaml")}
    demo = {p.name: p.read_text() for p in (ROOT / "params" / "sets" / "cpu-demo").glob("*.yaml")}
    assert demo == shipped, "params/sets/cpu-demo/ and params/*.yaml differ: copy the change into both"


def test_use_set_switches_validates_and_sets_the_source(tmp_path):
    from mim.params.edit import use_set

    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    written = use_set(params, "in1k-vit-b16", source="/data/imagenet")
    assert "mae.yaml" in written and "data.yaml" in written
    data = load_file(params / "data.yaml")
    assert data.source == "/data/imagenet" and data.image_size == 224
    assert load_file(params / "mae.yaml").model.size == "base"
    assert "#" in (params / "mae.yaml").read_text()  # comments kept
    use_set(params, "cpu-demo")
    assert (params / "data.yaml").read_text() == (ROOT / "params" / "data.yaml").read_text()
    bad = params / "sets" / "broken"
    shutil.copytree(params / "sets" / "cpu-demo", bad)
    (bad / "mae.yaml").write_text("train:\n  batch_sise: 3\n")
    with pytest.raises(ParamsError, match="batch_sise"):
        use_set(params, "broken")
    assert (params / "data.yaml").read_text() == (ROOT / "params" / "data.yaml").read_text()  # nothing changed
    with pytest.raises(ParamsError, match="no params set 'nope'"):
        use_set(params, "nope")
