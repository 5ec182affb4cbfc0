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

from mim.data import BatchAugment, StepBatches
from mim.data.prepared import load_prepared, open_prepared, read_manifest
from mim.data.shards import ShardSplit
from mim.data.stream import ShardSteps, step_loader
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


def test_batches_do_not_depend_on_the_number_of_workers(folder, tmp_path):
    prepare(DataParams(source=str(folder), image_size=16, storage="shards"), str(tmp_path / "p"), ("train",))
    shards = open_prepared(tmp_path / "p", "train")
    augment = BatchAugment(out_size=16, scale=(0.2, 1.0))
    steps = ShardSteps(shards, StepBatches(len(shards), 4, seed=3), augment, seed=3, rank=0, world_size=1,
                       accum_steps=2, start=5, stop=9)
    runs = [list(step_loader(steps, workers, pin_memory=False)) for workers in (0, 2)]
    assert len(runs[0]) == len(runs[1]) == 8  # 4 steps x 2 micro-batches
    for a, b in zip(*runs, strict=True):
        assert a["step"] == b["step"] and torch.equal(a["images"], b["images"]) and torch.equal(a["indices"],
                                                                                               b["indices"])
    assert runs[0][0]["images"].shape == (2, 3, 16, 16) and runs[0][0]["images"].dtype == torch.uint8
    other = ShardSteps(shards, StepBatches(len(shards), 4, seed=4), augment, seed=4, rank=0, world_size=1,
                       accum_steps=2, start=5, stop=9)
    assert not torch.equal(other[0]["images"], runs[0][0]["images"])  # control: another seed, other crops


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


def test_masks_are_drawn_in_the_workers_as_the_trainer_would(folder, tmp_path):
    """With shards the loader's workers draw the step's masks (off the training loop), the same ones the
    in-memory path draws in the main process: the generator of (seed, step) after the crops."""
    from mim.rng import generator_for
    from tests.helpers import build_method, tiny_params

    prepare(DataParams(source=str(folder), image_size=16, storage="shards"), str(tmp_path / "p"), ("train",))
    shards = open_prepared(tmp_path / "p", "train")
    method = build_method(tiny_params("mae"))
    augment = BatchAugment(out_size=16)
    batches = StepBatches(len(shards), 8, seed=1)
    steps = ShardSteps(shards, batches, augment, seed=1, rank=1, world_size=2, accum_steps=2, start=3, stop=5,
                       sample_masks=method.sample_masks)
    items = list(step_loader(steps, 2, pin_memory=False))
    for k, item in enumerate(items):
        step, micro = 3 + k // 2, k % 2
        gen = generator_for(1, "step", step)
        augment.sample(8, gen)
        expected = method.sample_masks(8, gen).slice(4 + 2 * micro, 6 + 2 * micro)  # rank 1's half, micro-batch
        assert torch.equal(item["mask"].mask, expected.mask) and torch.equal(item["mask"].ids_keep,
                                                                             expected.ids_keep)
    assert not torch.equal(items[0]["mask"].mask, items[2]["mask"].mask)  # control: another step, other masks
