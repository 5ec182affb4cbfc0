"""Memory benchmark: peak RSS of one training process on shard-form data of 20k and of 200k images. With shards
a rank holds only the labels and one epoch permutation per image (16 bytes), so the two should match."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mim.bench.data import synthetic_jpegs
from mim.data.prepared import save_manifest, shard_entry
from mim.data.shards import write_shards

_TRAIN = """
import json, resource, sys
from mim.data.prepared import open_prepared
from mim.params import PretrainParams
from mim.params.bind.training import pretrain_run
from mim.project.runs import run_files
root, out = sys.argv[1], sys.argv[2]
params = PretrainParams.model_validate({"data": {"source": "synthetic", "image_size": 64, "num_workers": 2},
    "model": {"patch_size": 16}, "train": {"steps": 20, "batch_size": 32, "ckpt_every": 1000}})
data = open_prepared(root, "train")
pretrain_run(params, run_files(out), out + "/params.json", data=data, resume="never")
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _corpus(root: Path, count: int, pool: list[bytes]) -> None:
    """Shards of `count` items cycling through `pool` (distinct JPEGs of mixed sizes), and a manifest."""
    labels = write_shards(str(root / "train"), ((i, i % 10, pool[i % len(pool)]) for i in range(count)))
    entry = shard_entry(str(root / "train"), labels, [f"c{i}" for i in range(10)], "bench", [], "bench", 64, 3, None,
                        (255, 255, 255))
    save_manifest(root, {"train": entry}, {"train": labels})


def bench_memory(counts: tuple[int, ...] = (20_000, 200_000), pool_size: int = 64) -> dict[str, Any]:
    """Peak RSS (MiB) of a 20-step training process (its loader workers apart) per corpus size."""
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mim-bench-memory-") as tmp:
        jpegs = synthetic_jpegs(Path(tmp) / "jpegs", pool_size)
        pool = [p.read_bytes() for p in sorted((Path(tmp) / "jpegs").rglob("*.jpg"))]
        del jpegs
        for count in counts:
            root = Path(tmp) / f"n{count}"
            _corpus(root, count, pool)
            done = subprocess.run([sys.executable, "-c", _TRAIN, str(root), str(Path(tmp) / f"run{count}")],
                                  capture_output=True, text=True, check=True)
            rows[count] = json.loads(done.stdout.strip().splitlines()[-1])["maxrss_mb"]
    small, large = rows[min(rows)], rows[max(rows)]
    return {"maxrss_mb": rows, "ratio": large / small}


def format_memory_bench(result: dict[str, Any]) -> str:
    lines = ["peak RSS of one training process on shards (DataLoader workers apart)"]
    lines += [f"{count:>8} images: {mb:>7.0f} MiB" for count, mb in result["maxrss_mb"].items()]
    lines.append(f"largest / smallest: {result['ratio']:.3f}")
    return "\n".join(lines)

