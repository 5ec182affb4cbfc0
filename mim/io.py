"""File I/O shared by every layer: atomic writes and whole-file reads through fsspec (local paths or URLs).

Everything that writes an output (checkpoints, exported encoders, prepared data, the tokenizer, pictures, metrics)
goes through `atomic_write_bytes`, so a reader (or a resumed run) sees the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import fsspec


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url`: bytes go to a temporary sibling, then are renamed over the target (os.replace
    locally, fsspec `mv` elsewhere)."""
    fs, path = fsspec.core.url_to_fs(url)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
        if fs.protocol in ("file", ("file", "local")) and hasattr(f, "fileno"):
            os.fsync(f.fileno())
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        os.replace(tmp, path)
    else:
        fs.mv(tmp, path)


def write_text(url: str, text: str) -> None:
    """Write a small text output (JSON, CSV, YAML) atomically."""
    atomic_write_bytes(url, text.encode())


def exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def read_bytes(url: str, what: str = "file") -> bytes:
    """The whole file at `url`; FileNotFoundError naming `what` is expected there when it does not exist."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no {what} there")
    with fs.open(path, "rb") as f:
        return f.read()


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_md5(path: Path) -> str:
    """md5 of a file; for a directory, md5 of its sorted (relative path, md5) listing, suffixed `.dir` like DVC."""
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        return "missing"
    listing = [{"md5": file_md5(p), "relpath": p.relative_to(path).as_posix()}
               for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"
