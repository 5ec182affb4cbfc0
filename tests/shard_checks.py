"""Checks of the shard loader's workers, run by tests/test_shards.py in a fresh interpreter (see there why)."""

from __future__ import annotations

from pathlib import Path

import torch

from mim.data import BatchAugment, StepBatches
from mim.data.prepared import open_prepared
from mim.data.stream import ShardSteps, step_loader
from mim.params import DataParams
from mim.params.bind.data import prepare


def batches_do_not_depend_on_workers(folder: str, tmp: str) -> None:
    folder, tmp_path = Path(folder), Path(tmp)
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


def masks_drawn_in_workers(folder: str, tmp: str) -> None:
    folder, tmp_path = Path(folder), Path(tmp)
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
