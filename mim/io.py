"""File I/O shared by every layer: atomic writes and whole-file reads through fsspec (local paths or URLs).

Everything that writes an output (checkpoints, exported encoders, prepared data, the tokenizer, pictures, metrics)
goes through `atomic_write` (or `atomic_write_bytes`), so a reader (or a resumed run) sees the old file or the new
one, never half; a write that fails (a full disk, an I/O error) removes its temporary file, keeps the previous file
and raises `OutputWriteError` naming the path and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import fsspec


class OutputWriteError(OSError):
    """An output could not be written (disk full, quota, I/O error, permissions); the previous file is untouched.
    `filename` is the output's path or URL, `errno` the cause's."""

    @classmethod
    def of(cls, url: str, cause: OSError, kept: bool) -> OutputWriteError:
        reason = cause.strerror or str(cause) or type(cause).__name__
        tail = "the previous file is kept" if kept else "nothing was written there"
        return cls(cause.errno, f"could not write {url}: {reason} ({tail})", url)

    def __str__(self) -> str:
        return self.strerror or ""


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, fsspec.implementations.local.LocalFileSystem)


class _Recording:
    """A file object that remembers the OSError its `write` raised: some writers turn it into another error
    (torch.save's zip writer raises a RuntimeError about the file position), which would hide the cause."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f, self.error = f, None

    def write(self, data: bytes) -> int | None:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)


def atomic_write(url: str, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(f)` on a temporary sibling of `url` opened for binary writing, then rename it over `url`
    (os.replace locally, fsspec `mv` elsewhere). Writers that stream (torch.save, savefig, np.save) never need the
    whole file in memory. On an OSError the temporary file is removed and `OutputWriteError` raised."""
    fs, path = fsspec.core.url_to_fs(url)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    kept, recording = False, None
    try:
        kept = fs.exists(path)
        parent = os.path.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            recording = _Recording(f)
            write(recording)
            f.flush()
            if _is_local(fs):
                os.fsync(f.fileno())
        if _is_local(fs):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
    except BaseException as err:
        _remove_quietly(fs, tmp)
        if isinstance(err, OutputWriteError) or not isinstance(err, Exception):
            raise
        cause = err if isinstance(err, OSError) else recording.error if recording else None
        if cause is None:
            raise
        raise OutputWriteError.of(url, cause, kept) from err


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` atomically (see `atomic_write`)."""
    atomic_write(url, lambda f: f.write(data))


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
