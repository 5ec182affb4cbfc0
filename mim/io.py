"""File I/O shared by every layer: atomic writes and whole-file reads through fsspec (local paths or URLs).

Everything that writes an output (checkpoints, exported encoders, prepared data, the tokenizer, pictures, metrics)
goes through `atomic_write_bytes`, so a reader (or a resumed run) sees the old file or the new one, never half.
"""

from __future__ import annotations

import os
import uuid

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
