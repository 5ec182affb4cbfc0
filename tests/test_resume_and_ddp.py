"""End-to-end engine guarantees through the CLI: SIGKILL + --resume ends with the same weights as an
uninterrupted run; 2 gloo processes follow the same loss trajectory as 1 process."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT, run_mim, tiny_overrides

pytestmark = pytest.mark.slow


def _sets(*items: str) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "encoder.safetensors"))


def _history(out) -> list[float]:
    with open(out / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_killed_run_resumes_to_identical_weights(tmp_path):
    sets = _sets(*tiny_overrides("mae", **{"train.steps": 150, "train.ckpt_every": 10, "train.deterministic": True,
                                           "data.source": "synthetic:256"}))
    ref = tmp_path / "ref"
    done = run_mim("pretrain", "--out", str(ref), *sets)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mim.cli", "pretrain", "--out", str(out), *sets], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # let it run past the checkpoint, so work is lost and must be redone
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "encoder.safetensors").exists()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 150

    resumed = run_mim("pretrain", "--out", str(out), "--resume", *sets)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt} at step {killed_at}" in resumed.stderr
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _history(ref) == pytest.approx(_history(out), abs=0)


def test_two_processes_match_one_process(tmp_path):
    common = tiny_overrides("mae", **{"train.steps": 8, "train.batch_size": 16, "train.ckpt_every": 100})
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run_mim("pretrain", "--out", str(one), *_sets(*common))
    assert r1.returncode == 0, r1.stderr
    r2 = run_mim("pretrain", "--out", str(two), *_sets(*common, "launcher.nproc_per_node=2"))
    assert r2.returncode == 0, r2.stderr + r2.stdout
    assert "2 processes" in r2.stderr
    h1, h2 = _history(one), _history(two)
    assert len(h1) == len(h2) == 8
    assert h2 == pytest.approx(h1, rel=1e-4, abs=1e-5)
    a, b = _weights(one), _weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


def test_two_processes_with_accumulation_match_too(tmp_path):
    common = tiny_overrides("simmim", **{"train.steps": 6, "train.batch_size": 16})
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_mim("pretrain", "--out", str(one), *_sets(*common)).returncode == 0
    r2 = run_mim("pretrain", "--out", str(two), *_sets(*common, "launcher.nproc_per_node=2", "train.accum_steps=2"))
    assert r2.returncode == 0, r2.stderr
    assert _history(two) == pytest.approx(_history(one), rel=1e-4, abs=1e-5)
