"""End-to-end engine guarantees through the CLI: 2 gloo processes (DDP, FSDP) follow the same loss trajectory as
1 process. A killed run's resume is tested with a real `dvc repro` in tests/faults/test_resume.py."""

import csv
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_mim, tiny_overrides

pytestmark = pytest.mark.slow


def _sets(*items: str) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "encoder.safetensors"))


def _history(out) -> list[float]:
    with open(out / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


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


def test_fsdp_two_processes_match_one_process_and_resume(tmp_path):
    """launcher.strategy: fsdp shards the model over 2 gloo processes: the same losses and weights as one process;
    its checkpoints are whole, and a run continued from one ends where the uninterrupted run does."""
    common = tiny_overrides("mae", **{"train.steps": 8, "train.batch_size": 16, "train.ckpt_every": 4})
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_mim("pretrain", "--out", str(one), *_sets(*common)).returncode == 0
    fsdp = ("launcher.nproc_per_node=2", "launcher.strategy=fsdp")
    r2 = run_mim("pretrain", "--out", str(two), *_sets(*common, *fsdp))
    assert r2.returncode == 0, r2.stderr + r2.stdout
    assert _history(two) == pytest.approx(_history(one), rel=1e-4, abs=1e-5)
    a, b = _weights(one), _weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    ckpt = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["strategy"] == "fsdp" and ckpt["model"]["encoder.pos_embed"].shape == a["pos_embed"].shape  # whole

    continued = tmp_path / "continued"  # an fsdp checkpoint (whole) loads back into a sharded model
    shutil.copytree(two, continued)
    more = _sets(*tiny_overrides("mae", **{"train.steps": 12, "train.batch_size": 16, "train.ckpt_every": 4}), *fsdp)
    r3 = run_mim("pretrain", "--out", str(continued), "--resume", "force", *more)  # a longer schedule: forced
    assert r3.returncode == 0, r3.stderr
    assert "at step 8" in r3.stderr and len(_history(continued)) == 12
    forced = json.loads((continued / "train_metrics.json").read_text())["resume_changes"]
    assert forced == ["train.steps: 8 -> 12"]
    shutil.copytree(two / "checkpoints", tmp_path / "mixed" / "checkpoints")  # and is refused by DDP, clearly
    r4 = run_mim("pretrain", "--out", str(tmp_path / "mixed"), "--resume", *_sets(*common, "launcher.nproc_per_node=2"))
    assert r4.returncode == 1 and "written with launcher.strategy fsdp" in r4.stderr
