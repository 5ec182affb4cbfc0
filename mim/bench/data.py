"""Data benchmark: our shard loader against torchvision's `ImageFolder` + `DataLoader` on the same JPEG folder,
with the same transform (RandomResizedCrop(size, scale 0.2-1) + horizontal flip, uint8 out), batch size and
number of workers, in the same run; plus the time `prepare` takes to write the shards.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mim.data import BatchAugment, StepBatches
from mim.data.prepared import open_prepared
from mim.data.stream import ShardSteps, step_loader
from mim.params import DataParams
from mim.params.bind.data import prepare


def synthetic_jpegs(root: Path, count: int, classes: int = 10, seed: int = 0) -> Path:
    """`root/train/<class>/<i>.jpg`: `count` smooth random JPEGs of mixed sizes (shorter side 200-500 px, aspect
    3:4 to 4:3), like a photo collection after resizing."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        short = int(rng.integers(200, 501))
        long = int(short * rng.uniform(1.0, 4 / 3))
        w, h = (long, short) if i % 2 else (short, long)
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        noise = rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)) // 2 + noise
        Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return root


def _rate(batches: Any, steps: int, warmup: int) -> float:
    """Images per second over `steps` batches after `warmup` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    began, seen = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(it)
        seen += len(batch[0] if isinstance(batch, list | tuple) else batch["images"])
    return seen / (time.perf_counter() - began)


def bench_data(folder: str | None = None, *, images: int = 2000, size: int = 224, batch: int = 64, workers: int = 4,
               steps: int = 20, warmup: int = 3, max_side: int | None = 512, seed: int = 0) -> dict[str, Any]:
    """img/s of both loaders (median of rounds) and the prepare time per 10k images."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    with tempfile.TemporaryDirectory(prefix="mim-bench-data-") as tmp:
        root = Path(folder) if folder else synthetic_jpegs(Path(tmp) / "jpegs", images, seed=seed)
        began = time.perf_counter()
        data = DataParams(source=str(root), image_size=size, storage="shards", max_side=max_side)
        manifest = prepare(data, str(Path(tmp) / "prepared"), splits=("train",))
        prepare_s = time.perf_counter() - began
        shards = open_prepared(Path(tmp) / "prepared", "train")
        count = manifest["splits"]["train"]["count"]
        need = (warmup + steps) * batch
        if need > count:
            raise ValueError(f"{count} images are fewer than (warmup + steps) x batch = {need}; lower --steps")
        augment = BatchAugment(out_size=size, scale=(0.2, 1.0))
        ours = step_loader(ShardSteps(shards, StepBatches(count, batch, seed=seed), augment, seed=seed, rank=0,
                                      world_size=1, accum_steps=1, start=0, stop=warmup + steps), workers, False)
        transform = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
                                v2.RandomHorizontalFlip()])
        peer_set = datasets.ImageFolder(str(root / "train") if (root / "train").is_dir() else str(root),
                                        transform=transform)
        peer = DataLoader(peer_set, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        rows = {"ours (shards)": _rate(ours, steps, warmup), "torchvision ImageFolder": _rate(peer, steps, warmup)}
    return {"images": count, "size": size, "batch": batch, "workers": workers, "steps": steps,
            "prepare_s_per_10k": prepare_s / count * 10_000, "img_per_s": rows,
            "ratio": rows["ours (shards)"] / rows["torchvision ImageFolder"]}


def format_data_bench(result: dict[str, Any]) -> str:
    lines = [f"{result['images']} JPEGs, RandomResizedCrop {result['size']} + flip, batch {result['batch']}, "
             f"{result['workers']} workers, {result['steps']} timed batches",
             f"{'loader':<26} {'img/s':>8}"]
    lines += [f"{name:<26} {rate:>8.0f}" for name, rate in result["img_per_s"].items()]
    lines.append(f"ratio ours / torchvision: {result['ratio']:.2f}x; prepare: "
                 f"{result['prepare_s_per_10k']:.1f} s per 10k images")
    return "\n".join(lines)
