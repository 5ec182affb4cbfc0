"""State left between runs made to go wrong for real: prepared data older than params/data.yaml, a refused
`mim prepare` over good prepared data, two runs writing one folder or one stage checkpoint at once (real processes;
a lock of a dead process), a forgotten `--resume`, `--set` on the stage form, and MIM_TRACKING's words. Each ends
with one line and its exit code, and nothing the earlier run wrote is lost."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mim.cli.main import main
from mim.io import pid_alive
from mim.params.edit import edit_yaml_text
from mim.project import services
from mim.project.lock import LOCK_FILE, acquire
from mim.tracking import tracking_enabled
from tests.helpers import one_error_line, tiny_overrides
from tests.pipeline_project import make_project

pytestmark = pytest.mark.slow
TINY_SETS = [a for s in tiny_overrides("mae", **{"data.source": "synthetic:96", "model.depth": 1})
             for a in ("--set", s)]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIM_TRACKING": "off", **extra}
    env.pop("MIM_DEBUG", None)
    return env


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID names no process
    return child.pid


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project, prepared once by a real `mim prepare` run with MIM_TRACKING=No (so: no MLflow store)."""
    root = make_project(tmp_path_factory.mktemp("state") / "proj")
    r = subprocess.run([sys.executable, "-m", "mim.cli", "-q", "prepare"], cwd=root, capture_output=True, text=True,
                       timeout=120, env=_env(MIM_TRACKING="No"))
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MIM_TRACKING", "off")
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    data_yaml = project / "params" / "data.yaml"
    saved = data_yaml.read_text()
    yield project
    data_yaml.write_text(saved)


def _edit_data(project: Path, **updates: object) -> None:
    path = project / "params" / "data.yaml"
    path.write_text(edit_yaml_text(path.read_text(), updates)[0])


def test_tracking_switch_words(monkeypatch, project, capsys):
    assert not (project / ".mim" / "mlflow.db").exists()  # the fixture's `MIM_TRACKING=No mim prepare`
    for word, on in (("false", False), ("0", False), ("no", False), ("OFF", False), ("On", True), ("1", True),
                     ("TRUE", True), ("yes", True)):
        monkeypatch.setenv("MIM_TRACKING", word)
        assert tracking_enabled() is on, word
    monkeypatch.chdir(project)
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    monkeypatch.setenv("MIM_TRACKING", "maybe")
    assert main(["-q", "prepare"]) == 1
    assert one_error_line(capsys.readouterr().err, "prepare") == (
        "mim prepare: error: MIM_TRACKING='maybe': not a switch; use on or off (also true/false, 1/0, yes/no)")


def test_stale_prepared_data_is_refused_by_every_stage(in_project, capsys):
    project = in_project
    _edit_data(project, source="synthetic:200")
    # the documented stage command, run by itself (a real process), after an edit of data.yaml
    r = subprocess.run([sys.executable, "-m", "mim.cli", "pretrain", "--method", "mae", "--seed", "0"], cwd=project,
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 1
    assert one_error_line(r.stderr, "pretrain") == (
        "mim pretrain: error: data/prepared was prepared from other data params than params/data.yaml now holds "
        "(source: 'synthetic:96' -> 'synthetic:200'); run `dvc repro prepare` (or `mim prepare`) first")
    assert not (project / "models" / "mae").exists()
    _edit_data(project, source="synthetic:96", image_size=24)
    for argv in (["evaluate", "--pixels"], ["transfer", "--scratch", "--seed", "0"], ["tokenizer"], ["teacher"],
                 ["diversity"], ["pretrain", "--method", "mae", "--seed", "0"]):
        assert main(["-q", *argv]) == 1, argv
        line = one_error_line(capsys.readouterr().err, argv[0])
        assert line.endswith("(image_size: 16 -> 24); run `dvc repro prepare` (or `mim prepare`) first"), line
    assert not any((project / d).exists() for d in ("metrics/evaluate", "metrics/transfer/scratch", "models/tokenizer"))


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)


def test_a_refused_prepare_keeps_the_previous_prepared_data(in_project, tmp_path, capsys):
    project = in_project
    before = _digest(project / "data" / "prepared")
    leftover = project / "data" / f"prepared.tmp-{_dead_pid()}-0000abcd"  # of a prepare killed before its swap
    (leftover / "train").mkdir(parents=True)
    folder = tmp_path / "mm"  # train/{a,b}, test/{b,c}: the evaluation splits name different classes
    for split, classes in (("train", "ab"), ("test", "bc")):
        for c in classes:
            for i in range(2):
                _png(folder / split / c / f"{i}.png", 40 * i + ord(c))
    _edit_data(project, source=str(folder))
    assert main(["-q", "prepare"]) == 1
    assert "has class folder(s) c that the split" in one_error_line(capsys.readouterr().err, "prepare")
    assert _digest(project / "data" / "prepared") == before  # arrays and manifest as they were
    assert sorted(p.name for p in (project / "data").iterdir()) == ["prepared"]  # no temporary folder left, the
    # killed prepare's removed
    _edit_data(project, source="synthetic:96")
    assert main(["-q", "evaluate", "--pixels"]) == 0  # still usable as it is
    (project / "metrics" / "evaluate" / "pixels.json").unlink()


def test_two_one_off_runs_into_one_folder(tmp_path):
    out = tmp_path / "two"
    first = subprocess.Popen([sys.executable, "-m", "mim.cli", "-q", "pretrain", "--out", str(out), *TINY_SETS,
                              "--set", "train.steps=100000"], env=_env(), stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: os.nice(19))  # the second run's start gets the CPUs first
    try:
        lock = out / LOCK_FILE
        deadline = time.monotonic() + 60
        while not (out / "params.json").is_file() and first.poll() is None:  # the first run is under way
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.1)
        assert lock.read_text().split()[0] == str(first.pid)
        second = subprocess.run([sys.executable, "-m", "mim.cli", "pretrain", "--out", str(out), *TINY_SETS,
                                 "--set", "train.seed=1"], env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert one_error_line(second.stderr, "pretrain") == (
            f"mim pretrain: error: {out} is in use by another run (PID {first.pid}, lock file {lock}); wait for it "
            "to end or write elsewhere")
        assert first.poll() is None  # the first run goes on, its params file its own
        assert json.loads((out / "params.json").read_text())["train"]["seed"] == 0
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 143 and not (out / LOCK_FILE).exists()


def _wait_until_shown_as_zombie(pid: int, why: str, timeout_s: float = 10.0) -> None:
    """Until /proc shows `pid`'s main thread as a zombie (state Z); `why` fails the test after `timeout_s`."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout_s
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, why
        time.sleep(0.01)


def test_a_killed_run_left_as_a_zombie_holds_no_lock(tmp_path, caplog):
    """A run killed together with its parent stays a zombie where PID 1 reaps nothing (a container without an init):
    `kill(pid, 0)` still finds it, yet it runs no more, so its lock is taken over (CI's resumed `dvc repro` was
    refused so)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        child.kill()  # not reaped: a zombie until wait()
        _wait_until_shown_as_zombie(child.pid, "the killed child never became a zombie")
        os.kill(child.pid, 0)  # found all the same
        assert not pid_alive(child.pid)
        lock = tmp_path / LOCK_FILE
        lock.write_text(f"{child.pid} {socket.gethostname()}\n")
        acquire(lock, "the run folder")
        assert f"taking over the lock of PID {child.pid}, which is no longer running" in caplog.text
        assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        child.wait()
    assert not pid_alive(child.pid) and pid_alive(os.getpid())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_process_whose_main_thread_exited_still_runs():
    """While a multi-threaded server exits, its main thread shows as a zombie and its other threads still run: it
    holds its lock and port until the last thread ends, and `mim down` waits for that (CI once found the MLflow
    server alive after `mim down` returned)."""
    code = ("import ctypes, threading, time; threading.Thread(target=time.sleep, args=(3,)).start(); "
            "ctypes.CDLL(None).pthread_exit(None)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_until_shown_as_zombie(child.pid, "the main thread never exited")
        assert pid_alive(child.pid) and services._alive(child.pid)
        deadline = time.monotonic() + 10
        while services._alive(child.pid):  # our child: reaped once its last thread ends
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_finished_run_is_not_overwritten_without_resume_never(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK_FILE).write_text(f"{dead} {socket.gethostname()}\n")  # left by a killed run
    assert main(["pretrain", "--out", str(out), *TINY_SETS, "--set", "train.steps=4"]) == 0
    assert f"{out}: taking over the lock of PID {dead}, which is no longer running" in caplog.text
    assert not (out / LOCK_FILE).exists()
    kept = _digest(out)
    # re-run with other params and no --resume: refused, the finished run's files (params.json too) untouched
    assert main(["-q", "pretrain", "--out", str(out), *TINY_SETS, "--set", "train.steps=2"]) == 1
    line = one_error_line(capsys.readouterr().err, "pretrain")
    assert "this checkpoint was made by a different run (train.steps: 4 -> 2)" in line
    assert _digest(out) == kept
    # --resume never: replaced on purpose
    assert main(["-q", "pretrain", "--out", str(out), *TINY_SETS, "--set", "train.steps=2", "--resume", "never"]) == 0
    assert _digest(out)["encoder.safetensors"] != kept["encoder.safetensors"]
    assert json.loads((out / "params.json").read_text())["train"]["steps"] == 2


def test_the_stage_checkpoint_is_locked_while_a_stage_runs(in_project, capsys, caplog):
    project = in_project
    lock = project / ".mim" / "checkpoints" / "pretrain-mae-seed-0.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["sleep", "60"])  # a live process holding the lock
    try:
        lock.write_text(f"{holder.pid} {socket.gethostname()}\n")
        assert main(["-q", "pretrain", "--method", "mae", "--seed", "0"]) == 1
        assert one_error_line(capsys.readouterr().err, "pretrain") == (
            f"mim pretrain: error: .mim/checkpoints/pretrain-mae-seed-0/ (the checkpoint of pretrain-mae-seed-0) is in "
            f"use by another run (PID {holder.pid}, lock file .mim/checkpoints/pretrain-mae-seed-0.lock); wait for it "
            "to end or write elsewhere")
    finally:
        holder.kill()
        holder.wait()
    timings = project / "metrics" / "timings" / "pretrain@mae-0.json"
    assert not timings.exists()  # a stage that failed records no seconds
    assert main(["pretrain", "--method", "mae", "--seed", "0"]) == 0  # the holder is dead now: taken over
    assert f"taking over the lock of PID {holder.pid}, which is no longer running" in caplog.text
    assert (project / "models" / "mae" / "seed-0" / "encoder.safetensors").is_file() and not lock.exists()
    seconds = json.loads(timings.read_text())  # the stage's per-stage seconds (mim.tracking.timings)
    assert seconds["stage"] == "pretrain@mae-0" and 0 < seconds["compute_s"] <= seconds["wall_s"]


def test_the_stage_form_refuses_set(in_project, capsys):
    project = in_project
    for argv, file, alternative in (
            (["evaluate", "--method", "mae", "--set", "knn.k=1"], "eval", ", or use the one-off form (--encoder FILE)"),
            (["pretrain", "--method", "mae", "--set", "data.image_size=24"], "data",
             ", or use the one-off form (--out DIR)"),
            (["prepare", "--set", "data.source=synthetic:200"], "data", ""),
            (["transfer", "--scratch", "--set", "finetune.epochs=2"], "transfer", "")):
        assert main(["-q", *argv]) == 2, argv
        assert one_error_line(capsys.readouterr().err, argv[0]) == (
            f"mim {argv[0]}: error: --set {argv[-1]}: the stage form reads its params only from the params files (its "
            f"outputs are tracked by DVC); edit params/{file}.yaml instead{alternative}")
    assert not (project / "metrics" / "evaluate" / "mae.json").exists()


def test_the_stale_data_check_compares_what_dvc_reruns_prepare_for():
    import yaml

    from mim.params.bind.data import PREPARED_BY
    from tests.helpers import ROOT

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]
    listed = next(p["params/data.yaml"] for p in stage["params"] if isinstance(p, dict) and "params/data.yaml" in p)
    assert sorted(PREPARED_BY) == sorted(listed)
