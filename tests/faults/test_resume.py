"""Resume identity and killed runs: a checkpoint is continued only by the run that made it, and a `dvc repro` killed
with SIGKILL and run again ends with the weights of an uninterrupted run (pre-training and fine-tuning)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mim.cli.main import main
from mim.engine.identity import RunIdentity, check_resume, source_digest
from mim.io import pid_alive
from mim.models.state import CheckpointError
from mim.params import DataParams, TransferParams
from mim.params.bind.training import run_identity
from mim.params.edit import edit_yaml_text
from mim.stages.transfer import finetune_identity
from tasks.dvc_stage import tool_env
from tests.helpers import pretrain, tiny_overrides, tiny_params
from tests.pipeline_project import make_project


def _sets(**extra) -> list[str]:
    pairs = tiny_overrides("mae", **{"train.steps": 6, "train.batch_size": 16, "train.ckpt_every": 3, **extra})
    return [arg for p in pairs for arg in ("--set", p)]


def _pretrain(out: Path, *args: str, **extra) -> int:
    return main(["-q", "pretrain", "--out", str(out), *args, *_sets(**extra)])


def test_a_resume_with_other_params_or_data_is_refused_and_force_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(out) == 0  # a one-off run keeps its last checkpoint (step 6)
    capsys.readouterr()
    assert _pretrain(out, **{"optim.base_lr": 1e-3}) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mim pretrain: error: ")
    assert "(optim.base_lr: 0.002 -> 0.001)" in err and "train.resume" in err
    assert _pretrain(out, **{"data.source": "synthetic:64"}) == 1
    assert "training data: digest" in capsys.readouterr().err

    assert _pretrain(out, **{"train.log_every_s": 1.0, "train.ckpt_every": 2}) == 0  # run control: same run
    assert json.loads((out / "train_metrics.json").read_text())["resumed_from"] == 6

    assert _pretrain(out, "--resume", "force", **{"train.steps": 8}) == 0
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"] == 6 and metrics["resume_changes"] == ["train.steps: 6 -> 8"]
    assert metrics["steps"] == 8 and metrics["wall_time_s"] > 0

    assert _pretrain(out, "--resume", "never", **{"train.steps": 3}) == 0  # starts over
    assert json.loads((out / "train_metrics.json").read_text())["resumed_from"] is None


def test_a_code_change_is_named(tmp_path):
    package = Path(__file__).resolve().parents[2] / "mim"
    copy = tmp_path / "mim"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_digest(copy)
    (copy / "rng.py").write_text((copy / "rng.py").read_text() + "\n# edited\n")
    after = source_digest(copy)
    assert before != after
    saved = RunIdentity.of({"a": 1}, data="d", code=before).to_state()
    with pytest.raises(CheckpointError, match=r"code \(mim/\): digest"):
        check_resume("x.pt", saved, RunIdentity.of({"a": 1}, data="d", code=after), "auto", "train.resume")
    with pytest.raises(CheckpointError, match="records no identity"):
        check_resume("x.pt", None, RunIdentity.of({"a": 1}, data="d", code=after), "auto", "train.resume")
    assert check_resume("x.pt", saved, RunIdentity.of({"a": 2}, data="d", code=before), "force",
                        "train.resume") == ["a: 1 -> 2"]


def test_run_control_keys_are_left_out_of_both_identities():
    """Keys marked run control (pre-training's, fine-tuning's and data loading's) may change on a resume; any other
    key changes the identity, named. Fine-tuning once kept data.num_workers in its identity, so a killed fine-tune
    restarted with another worker count was refused."""
    base = tiny_params()
    same = {"train__device": "cpu", "train__ckpt_every": 7, "train__compile": True, "data__num_workers": 3,
            "data__storage": "array", "launcher__nproc_per_node": 2}
    for key, value in same.items():
        assert run_identity(tiny_params(**{key: value}), "d").changes_from(run_identity(base, "d")) == [], key
    assert run_identity(tiny_params(train__steps=9), "d").changes_from(run_identity(base, "d")) == [
        f"train.steps: {base.train.steps} -> 9"]

    def ft(data: DataParams, **finetune) -> RunIdentity:
        return finetune_identity(TransferParams(finetune=finetune), data, "labelled", "encoder")

    data = DataParams()
    for changed in ({"device": "cpu"}, {"ckpt_every": 7}, {"ckpt_every_s": None}, {"resume": "force"}):
        assert ft(data, **changed).changes_from(ft(data)) == [], changed
    assert ft(data.model_copy(update={"num_workers": 3})).changes_from(ft(data)) == []
    assert ft(data, epochs=2.0).changes_from(ft(data)) == ["transfer.finetune.epochs: 1.0 -> 2.0"]
    assert ft(data.model_copy(update={"image_size": 48})).changes_from(ft(data)) == [
        f"data.image_size: {data.image_size} -> 48"]


def test_checkpoints_are_also_written_by_time(tmp_path):
    """`train.ckpt_every_s`: with steps far apart, a checkpoint still follows every recorded step once the time is
    up; with it off, none is written before the end."""
    seen: dict[str, list[int]] = {}

    def run(name: str, every_s: str) -> None:
        ckpt = tmp_path / name / "checkpoints" / "last.pt"
        steps = seen.setdefault(name, [])

        def on_metrics(step: int, _: dict) -> None:
            steps.append(int(torch.load(ckpt, weights_only=True)["step"]) if ckpt.exists() else 0)

        params = tiny_params(train__steps=5, train__ckpt_every=1000, train__ckpt_every_s=every_s)
        pretrain(params, str(tmp_path / name), on_metrics=on_metrics)

    run("timed", "1e-6")
    run("steps-only", "null")
    assert seen["timed"] == [0, 1, 2, 3, 4]  # at step k, the checkpoint of step k-1
    assert seen["steps-only"] == [0, 0, 0, 0, 0]


# -- dvc repro killed with SIGKILL, then run again ----------------------------------------------------------------
# Each run lasts seconds, far longer than the kill takes: a tiny fine-tune does 40 steps in 0.25 s on a 2-core host,
# so a short one can finish between its first checkpoint and the signal on a faster machine.
PRETRAIN_STEPS, FINETUNE_STEPS = 100, 64 // 16 * 100
LONG = {"mae": {"train.steps": PRETRAIN_STEPS, "train.ckpt_every": 4, "train.deterministic": True},
        "transfer": {"finetune.train_subset": 64, "finetune.epochs": 100, "finetune.ckpt_every": 4,
                     "finetune.label_fractions": [1.0]},
        "pipeline": {"transfer_seeds": [0]}}  # the shipped demo fine-tunes nothing


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, timeout=300, env=tool_env())


def _wait_until_gone(pgid: int, timeout_s: float = 30.0) -> None:
    """Until no process of group `pgid` runs (an unreaped zombie does not: `pid_alive`)."""
    def members() -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid:
                        out.append(int(entry.name))
                except ProcessLookupError:
                    pass
        return out

    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in members()):
        assert time.monotonic() < deadline, f"process group {pgid} still runs {timeout_s:.0f} s after the signal"
        time.sleep(0.05)


def _kill_mid_run(project: Path, stage: str, ckpt: Path, sig: int = signal.SIGKILL) -> int:
    """Start `dvc repro stage`, send `sig` to its whole process group once a checkpoint is written; the
    checkpoint's step."""
    proc = subprocess.Popen(["dvc", "repro", stage], cwd=project, start_new_session=True, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)  # past the checkpoint: work is lost and must be redone
    os.killpg(proc.pid, sig)
    proc.wait()
    _wait_until_gone(proc.pid)  # dvc's child too: a resume must not find the killed run still holding its lock
    # a finished run removes its checkpoint; dvc may answer a SIGTERM with 255 whether or not the stage was done
    assert proc.returncode in (-sig, 128 + sig, 255) and ckpt.exists(), f"{stage} finished before it could be killed"
    return int(torch.load(ckpt, weights_only=True)["step"])


@pytest.mark.slow
def test_killed_dvc_repro_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import mlflow

    project = make_project(tmp_path / "proj")
    for name, updates in LONG.items():
        path = project / "params" / f"{name}.yaml"
        path.write_text(edit_yaml_text(path.read_text(), updates)[0])
    monkeypatch.setenv("MIM_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MIM_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MIM_PARENT_RUN_ID", raising=False)
    checkpoints = project / ".mim" / "checkpoints"

    killed_at = _kill_mid_run(project, "pretrain@mae-0", checkpoints / "pretrain-mae-seed-0" / "last.pt")
    assert 0 < killed_at < PRETRAIN_STEPS
    killed_elapsed = torch.load(checkpoints / "pretrain-mae-seed-0" / "last.pt", weights_only=True)["elapsed_s"]
    resumed = _dvc(project, "repro", "pretrain@mae-0")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert f"at step {killed_at}" in resumed.stdout + resumed.stderr
    assert not (checkpoints / "pretrain-mae-seed-0").exists()  # complete: removed
    metrics = json.loads((project / "metrics/pretrain/mae/seed-0.json").read_text())
    assert metrics["resumed_from"] == killed_at and metrics["wall_time_s"] > killed_elapsed
    weights = load_file(str(project / "models/mae/seed-0/encoder.safetensors"))
    history = (project / "plots/pretrain/mae/seed-0/history.csv").read_text()

    ft_killed_at = _kill_mid_run(project, "transfer@mae-0", checkpoints / "transfer-mae-seed-0" / "last.pt",
                                 signal.SIGTERM)
    assert 0 < ft_killed_at < FINETUNE_STEPS
    assert _dvc(project, "repro", "transfer@mae-0").returncode == 0
    ft_resumed = json.loads((project / "metrics/transfer/mae/seed-0.json").read_text())
    ft_curve = (project / "plots/transfer/mae/seed-0.csv").read_text()

    client = mlflow.MlflowClient()
    runs = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("mim").experiment_id], filter_string="attributes.run_name = 'pretrain@mae-0'")}
    finished = [r for r in runs.values() if r.info.status == "FINISHED"]
    assert len(runs) == 2 and len(finished) == 1
    continued = finished[0].data.tags["mim.continues_run"]
    assert runs[continued].info.status == "KILLED"  # marked by the run that continued it
    ft_runs = client.search_runs([client.get_experiment_by_name("mim").experiment_id],
                                 filter_string="attributes.run_name = 'transfer@mae-0'")
    assert sorted(r.info.status for r in ft_runs) == ["FINISHED", "KILLED"]  # SIGTERM: it ended its run itself

    assert _dvc(project, "repro", "-f", "-s", "pretrain@mae-0", "transfer@mae-0").returncode == 0  # uninterrupted
    assert (project / "plots/pretrain/mae/seed-0/history.csv").read_text() == history
    uninterrupted = load_file(str(project / "models/mae/seed-0/encoder.safetensors"))
    assert weights.keys() == uninterrupted.keys()
    for k in weights:
        assert torch.equal(weights[k], uninterrupted[k]), k
    ft_once = json.loads((project / "metrics/transfer/mae/seed-0.json").read_text())
    assert ft_once["finetune_top1"] == ft_resumed["finetune_top1"]
    assert (project / "plots/transfer/mae/seed-0.csv").read_text() == ft_curve
