"""The shard storage form: real image folders written as streaming shards (capped, corrupt files named), batches
that do not depend on the number of DataLoader workers, and a killed run on shards resuming to identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mim.data.prepared import load_prepared, open_prepared, read_manifest
from mim.data.shards import ShardSplit
from mim.params import DataParams
from mim.params.bind.data import prepare, storage_form
from tests.helpers import ROOT, run_mim, tiny_overrides


def jpeg_folder(root, sizes: dict[str, list[tuple[int, int]]], seed: int = 0):
    """`root/<class>/<i>.jpg` of the given (width, height), random smooth colours."""
    rng = np.random.default_rng(seed)
    for cls, dims in sizes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(dims):
            base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR).save(root / cls / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    dims = [(40, 30), (96, 128), (200, 90), (33, 33), (64, 48), (150, 150)]
    for split in ("train", "test"):
        jpeg_folder(root / split, {"cat": dims, "dog": dims[::-1]}, seed=0 if split == "train" else 1)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def test_folder_to_shards_caps_big_images_and_names_skipped_files(folder, tmp_path):
    data = DataParams(source=str(folder), image_size=16, storage="shards", max_side=64)
    manifest = prepare(data, str(tmp_path / "prepared"))
    train = manifest["splits"]["train"]
    assert train["form"] == "shards" and train["count"] == 12 and train["classes"] == ["cat", "dog"]
    assert train["skipped"]["count"] == 1 and train["skipped"]["files"][0].endswith("dog/broken.jpg")
    shards = open_prepared(tmp_path / "prepared", "train")
    assert isinstance(shards, ShardSplit) and len(shards) == 12 and shards.labels.tolist() == [0] * 6 + [1] * 6
    sides = sorted(min(shards.image(i).size) for i in range(len(shards)))
    assert max(sides) == 64 and 30 in sides  # big images capped at their shorter side, small ones untouched
    test = load_prepared(tmp_path / "prepared", "test")  # the evaluation view: center crops at image_size
    assert test.images.shape == (12, 3, 16, 16) and test.labels.tolist() == [0] * 6 + [1] * 6


def test_auto_storage_picks_by_size(folder):
    small = DataParams(source=str(folder), image_size=16)
    assert storage_form(small, "train") == "array"
    assert storage_form(small.model_copy(update={"array_max_gb": 1e-6}), "train") == "shards"
    assert storage_form(DataParams(source="synthetic:64", array_max_gb=1e-9), "train") == "array"  # in memory


def _in_fresh_process(check: str, *args: str) -> None:
    """Run `tests.shard_checks.<check>(*args)` in a new interpreter: DataLoader workers are forked, and a process
    that ran an in-process Prefect server (the pipeline tests' harness) leaves state its forks exit badly with."""
    code = f"import sys; from tests.shard_checks import {check}; {check}(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_batches_do_not_depend_on_the_number_of_workers(folder, tmp_path):
    _in_fresh_process("batches_do_not_depend_on_workers", str(folder), str(tmp_path))


def test_masks_are_drawn_in_the_workers_as_the_trainer_would(folder, tmp_path):
    """With shards the loader's workers draw the step's masks (off the training loop), the same ones the
    in-memory path draws in the main process: the generator of (seed, step) after the crops."""
    _in_fresh_process("masks_drawn_in_workers", str(folder), str(tmp_path))


def _sets(*items: str) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


@pytest.mark.slow
def test_killed_run_on_shards_resumes_to_identical_weights(folder, tmp_path):
    sets = _sets(*tiny_overrides("mae", **{"train.steps": 150, "train.ckpt_every": 5, "train.batch_size": 4,
                                           "train.deterministic": True, "data.source": str(folder),
                                           "data.storage": "shards", "data.num_workers": 2}))
    ref = tmp_path / "ref"
    done = run_mim("pretrain", "--out", str(ref), *sets)
    assert done.returncode == 0, done.stderr
    assert "streaming shards: 2 DataLoader workers" in done.stderr
    assert read_manifest(ref / "prepared")["splits"]["train"]["form"] == "shards"

    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen([sys.executable, "-m", "mim.cli", "pretrain", "--out", str(out), *sets], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its loader workers
    except ProcessLookupError:
        pytest.fail("the run finished before it could be killed")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 150

    resumed = run_mim("pretrain", "--out", str(out), "--resume", *sets)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt} at step {killed_at}" in resumed.stderr
    a, b = load_file(str(ref / "encoder.safetensors")), load_file(str(out / "encoder.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_shards_and_arrays_show_the_same_evaluation_view(folder, tmp_path):
    """Both storage forms decode and center-crop with one rule, so evaluation sees the same pixels; shards'
    `images` decode only the images indexed."""
    for form in ("array", "shards"):
        prepare(DataParams(source=str(folder), image_size=16, storage=form, max_side=None), str(tmp_path / form))
    array, shards = load_prepared(tmp_path / "array", "test"), load_prepared(tmp_path / "shards", "test")
    assert torch.equal(array.images, shards.images) and torch.equal(array.labels, shards.labels)
    lazy = open_prepared(tmp_path / "shards", "train").images
    assert len(lazy) == 12 and torch.equal(lazy[torch.tensor([5, 0])], lazy[:6][[5, 0]])
