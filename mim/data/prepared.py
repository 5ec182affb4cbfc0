"""A prepared data set on disk, and a JSON manifest naming each split's storage form:

- `array`: one uint8 `.npy` array at the image size (+ labels), memory-mapped when read, so the ranks of one
  machine share one copy in the page cache;
- `shards`: the encoded images as streaming shards (`mim.data.shards`), for corpora that do not fit in memory;
  random crops are then taken from the full stored image.

The prepare stage writes it once from any source (Fashion-MNIST IDX, image folders over fsspec, synthetic);
every later stage reads these files, so DVC hashes one directory (or, for shards at a URL, the manifest's
digest) and all stages see exactly the same images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mim.data.dataset import ImageTensors
from mim.data.shards import ShardSplit
from mim.io import atomic_write, atomic_write_bytes, filesystem, load_npy, read_json_object

MANIFEST = "manifest.json"
REBUILD = "rebuild it with `dvc repro prepare` (or `mim prepare`)"
FORMAT = "mim-prepared/1"


def _write_npy(url: str, array: np.ndarray) -> None:
    """An array as a .npy file, streamed into the file atomically (no second copy in memory)."""
    atomic_write(url, lambda f: np.save(f, array, allow_pickle=False))


def save_split(root: str | Path, name: str, ds: ImageTensors) -> dict[str, Any]:
    """Write one split as arrays under `root`; returns its manifest entry."""
    root = Path(root)
    _write_npy(str(root / f"{name}_images.npy"), ds.images.cpu().numpy())
    _write_npy(str(root / f"{name}_labels.npy"), ds.labels.cpu().numpy())
    return {"form": "array", "count": len(ds), "shape": list(ds.images.shape[1:]), "classes": ds.classes,
            "labeled": ds.is_labeled, "source": ds.source, "digest": ds.digest(),
            "skipped": {"count": len(ds.skipped), "files": ds.skipped}}


def save_prepared(root: str | Path, splits: dict[str, ImageTensors], extra: dict[str, Any] | None = None) -> dict:
    """Write `splits` under `root` as arrays and return the manifest (shapes, classes, digests, `extra`)."""
    return save_manifest(root, {name: save_split(root, name, ds) for name, ds in splits.items()}, {}, extra)


def clear_manifest(root: str | Path) -> None:
    """Remove `root`'s manifest before its splits are rewritten: until the new manifest is written last, the folder
    does not pass as prepared (a run stopped half-way, by a full disk or a kill, leaves no stale manifest beside
    new arrays)."""
    fs, path = filesystem(f"{str(root).rstrip('/')}/{MANIFEST}")
    if fs.exists(path):
        fs.rm(path)


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prepared data set there; run `mim prepare` (or `dvc repro prepare`)")
    manifest = read_json_object(path, REBUILD)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a prepared data set (format {manifest.get('format')!r})")
    return manifest


def shard_entry(url: str, labels: np.ndarray, classes: list[str], source: str, skipped: list[str], digest: str,
                image_size: int, channels: int, max_side: int | None, background: tuple[int, int, int]) -> dict:
    """The manifest entry of a split written as shards at `url` (labels are stored beside the manifest)."""
    return {"form": "shards", "url": url, "count": int(len(labels)), "shape": [channels, image_size, image_size],
            "classes": classes, "labeled": bool((labels >= 0).all()), "source": source, "digest": digest,
            "max_side": max_side, "background": list(background),
            "skipped": {"count": len(skipped), "files": skipped}}


def save_manifest(root: str | Path, splits: dict[str, dict], labels: dict[str, np.ndarray],
                  extra: dict[str, Any] | None = None) -> dict:
    """Write the manifest of already written splits (and the shard splits' labels)."""
    root = Path(root)
    for name, array in labels.items():
        _write_npy(str(root / f"{name}_labels.npy"), array)
    manifest = {"format": FORMAT, **(extra or {}), "splits": splits}
    atomic_write_bytes(str(root / MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def alias_entry(split: str) -> dict[str, Any]:
    """A manifest entry naming another split's images (stored once)."""
    return {"alias": split}


def _resolve(root: Path, split: str) -> tuple[str, dict[str, Any]]:
    """(stored split name, its manifest entry), following an alias."""
    splits = read_manifest(root)["splits"]
    info = splits.get(split)
    if info is None:
        raise ValueError(f"{root}: no split {split!r} prepared (have: {', '.join(splits)}); re-run `mim prepare`")
    return (info["alias"], splits[info["alias"]]) if "alias" in info else (split, info)


def open_prepared(root: str | Path, split: str) -> ImageTensors | ShardSplit:
    """Split `split` as stored: memory-mapped uint8 tensors (array form) or a streaming `ShardSplit`."""
    root = Path(root)
    split, info = _resolve(root, split)
    if info.get("form", "array") == "array":
        return load_prepared(root, split)
    labels = torch.from_numpy(load_npy(root / f"{split}_labels.npy", REBUILD)).long()
    mode = "L" if info["shape"][0] == 1 else "RGB"
    return ShardSplit(info["url"], labels, info["classes"], f"{root}:{split}", mode, tuple(info["background"]),
                      info["digest"], info["shape"][-1])


def load_prepared(root: str | Path, split: str, limit: int | None = None) -> ImageTensors:
    """Split `split` as uint8 tensors at the prepared image size (at most its first `limit` images): the array
    memory-mapped, or shards decoded at their evaluation view (shorter side resized, center crop)."""
    root = Path(root)
    split, info = _resolve(root, split)
    if info.get("form", "array") == "shards":
        shards = open_prepared(root, split)
        n = len(shards) if limit is None else min(limit, len(shards))
        return shards.tensors(info["shape"][-1], range(n))
    mapped = load_npy(root / f"{split}_images.npy", REBUILD, mmap_mode="c")  # shared pages, copy on write
    images = torch.from_numpy(mapped[:limit] if limit is not None else mapped)
    labels = torch.from_numpy(load_npy(root / f"{split}_labels.npy", REBUILD)).long()
    labels = labels[:limit] if limit is not None else labels
    ds = ImageTensors(images=images, labels=labels, classes=info["classes"], source=f"{root}:{split}")
    if list(images.shape[1:]) != info["shape"] or (limit is None and len(ds) != info["count"]):
        raise ValueError(f"{root}: {split} arrays do not match the manifest ({list(images.shape)} vs {info})")
    return ds
