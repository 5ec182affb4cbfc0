"""A prepared data set on disk: each split as one uint8 `.npy` array (+ labels), and a JSON manifest.

The prepare stage writes it once from any source (Fashion-MNIST IDX, image folders over fsspec,
synthetic); every later stage reads these files, so DVC hashes one directory instead of a source
that may live in a bucket, and all stages see exactly the same images.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mim.data.dataset import ImageTensors
from mim.io import atomic_write_bytes

MANIFEST = "manifest.json"
FORMAT = "mim-prepared/1"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_prepared(root: str | Path, splits: dict[str, ImageTensors], extra: dict[str, Any] | None = None) -> dict:
    """Write `splits` under `root` and return the manifest (shapes, classes, digests, `extra`)."""
    root = Path(root)
    manifest: dict[str, Any] = {"format": FORMAT, **(extra or {}), "splits": {}}
    for name, ds in splits.items():
        atomic_write_bytes(str(root / f"{name}_images.npy"), _npy_bytes(ds.images.cpu().numpy()))
        atomic_write_bytes(str(root / f"{name}_labels.npy"), _npy_bytes(ds.labels.cpu().numpy()))
        manifest["splits"][name] = {"count": len(ds), "shape": list(ds.images.shape[1:]), "classes": ds.classes,
                                    "labeled": ds.is_labeled, "source": ds.source, "digest": ds.digest()}
    atomic_write_bytes(str(root / MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prepared data set there; run `mim prepare` (or `dvc repro prepare`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a prepared data set (format {manifest.get('format')!r})")
    return manifest


def load_prepared(root: str | Path, split: str) -> ImageTensors:
    """Split `split` of the prepared data set under `root` (memory-mapped read, then one uint8 tensor)."""
    root = Path(root)
    info = read_manifest(root)["splits"].get(split)
    if info is None:
        raise ValueError(f"{root}: no split {split!r} prepared (have: {', '.join(read_manifest(root)['splits'])})")
    images = torch.from_numpy(np.load(root / f"{split}_images.npy", allow_pickle=False))
    labels = torch.from_numpy(np.load(root / f"{split}_labels.npy", allow_pickle=False)).long()
    ds = ImageTensors(images=images, labels=labels, classes=info["classes"], source=f"{root}:{split}")
    if list(images.shape[1:]) != info["shape"] or len(ds) != info["count"]:
        raise ValueError(f"{root}: {split} arrays do not match the manifest ({list(images.shape)} vs {info})")
    return ds
