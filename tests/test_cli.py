"""The `mim` command: clear errors (no tracebacks) and the pretrain -> evaluate path."""

import json

import pytest

from tests.helpers import run_mim, tiny_overrides


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_unknown_param_is_one_clear_line(tmp_path):
    r = run_mim("pretrain", "--method", "mae", "--set", "train.stepz=3", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "train.stepz: Extra inputs are not permitted" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_option_and_method_are_usage_errors():
    r = run_mim("pretrain", "--method", "dino", "--seed", "0")
    assert r.returncode == 2 and "params/dino.yaml: params file not found (recipes: a method name mae" in r.stderr
    r = run_mim("pretrain", "--frobnicate")
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr


def test_method_flag_must_agree_with_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("method:\n  name: simmim\n")
    r = run_mim("pretrain", "--method", "mae", "--params", str(f))
    assert r.returncode == 2 and "method.name is 'simmim' but --method is 'mae'" in r.stderr


def test_missing_dataset_names_path_and_fix(tmp_path):
    r = run_mim("pretrain", "--method", "mae", "--set", f"data.source=fashion-mnist:{tmp_path}/none",
                "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert f"{tmp_path}/none" in r.stderr and "apt-get install -y dataset-fashion-mnist" in r.stderr
    assert "Traceback" not in r.stderr


def test_empty_image_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_mim("pretrain", "--method", "mae", "--set", f"data.source={tmp_path}/empty", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and f"{tmp_path}/empty" in r.stderr


@pytest.mark.slow
def test_pretrain_then_evaluate_with_baselines(tmp_path):
    out = tmp_path / "run"
    r = run_mim("pretrain", "--out", str(out), *_sets(tiny_overrides("simmim")))
    assert r.returncode == 0, r.stderr
    assert "step 12/12" in r.stderr and "img/s" in r.stderr and "eta" in r.stderr
    metrics = tmp_path / "eval.json"
    r = run_mim("evaluate", "--encoder", str(out / "encoder.safetensors"), "--baseline", "--out", str(metrics),
                "--set", "linear.epochs=3", "--set", "data.source=synthetic:64")
    assert r.returncode == 0, r.stderr
    result = json.loads(metrics.read_text())
    assert set(result) == {"encoder", "random_init", "pixels"}
    assert "pre-trained encoder" in r.stdout and "random-init encoder" in r.stdout
    r = run_mim("evaluate", "--encoder", str(out / "encoder.safetensors"), "--set", "knn.k=0")
    assert r.returncode == 2 and "knn.k" in r.stderr


def test_version_names_the_installed_package():
    from importlib.metadata import version

    r = run_mim("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mim {version('mim')}"


def test_serve_without_a_server_is_one_line(tmp_path):
    """`mim serve` looks for the project's Prefect server before handing over to `python -m flows`."""
    r = run_mim("serve", env={"MIM_PROJECT_DIR": str(tmp_path), "PREFECT_API_URL": ""})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no Prefect server is configured (PREFECT_API_URL unset): start one with `mim up`" in r.stderr
