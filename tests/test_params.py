"""Params: bad values and unknown keys fail before any work, naming file, dotted path and reason."""

import pytest

from mim.params import EvalParams, ParamsError, PretrainParams, load_params


def _write(tmp_path, text: str):
    p = tmp_path / "mae.yaml"
    p.write_text(text)
    return p


def test_defaults_validate():
    p = PretrainParams()
    assert p.method.name == "mae" and p.model.size == "micro" and p.data.source == "fashion-mnist"


@pytest.mark.parametrize("yaml_text, path, reason", [
    ("method:\n  name: mae\n  mask_ratio: 1.2\n", "method.mask_ratio", "less than 1"),
    ("train:\n  batch_size: 0\n", "train.batch_size", "greater than 0"),
    ("model:\n  size: huge\n", "model.size", "'micro', 'tiny', 'small', 'base' or 'large'"),
    ("optim:\n  lr: 0.1\n", "optim.lr", "Extra inputs are not permitted"),
    ("method:\n  name: dino\n", "method", "does not match any of the expected tags"),
    ("data:\n  augment:\n    scale: [0.9, 0.2]\n", "data.augment", "scale must be (low, high)"),
    ("method:\n  name: simmim\n  decoder: {depth: 2}\n", "method.decoder", "Extra inputs"),
])
def test_bad_values_name_file_path_and_reason(tmp_path, yaml_text, path, reason):
    f = _write(tmp_path, yaml_text)
    with pytest.raises(ParamsError) as err:
        load_params(PretrainParams, f)
    msg = str(err.value)
    assert f"{f}: {path}" in msg and reason in msg


def test_overrides_apply_and_are_validated(tmp_path):
    f = _write(tmp_path, "train:\n  steps: 10\n")
    p = load_params(PretrainParams, f, ["train.steps=20", "optim.betas=[0.9, 0.98]", "method.name=simmim"])
    assert p.train.steps == 20 and p.optim.betas == (0.9, 0.98) and p.method.name == "simmim"
    with pytest.raises(ParamsError, match=r"--set train\.stepz=3.*train\.stepz: Extra inputs"):
        load_params(PretrainParams, f, ["train.stepz=3"])
    with pytest.raises(ParamsError, match="expected key=value"):
        load_params(PretrainParams, f, ["train.steps"])
    with pytest.raises(ParamsError, match="train.steps is a value, not a section"):
        load_params(PretrainParams, f, ["train.steps.x=1"])


def test_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(PretrainParams, tmp_path / "nope.yaml")
    bad = _write(tmp_path, "train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(PretrainParams, bad)
    lst = _write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(PretrainParams, lst)


def test_yaml_is_loaded_safely(tmp_path):
    f = _write(tmp_path, "train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(PretrainParams, f)


def test_eval_params_reject_unknown_keys():
    with pytest.raises(ParamsError, match="knn.kk"):
        load_params(EvalParams, None, ["knn.kk=3"])
