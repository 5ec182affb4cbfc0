"""Atomic checkpoints through fsspec, loaded with `weights_only=True`."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import fsspec
import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used here: unreadable, or written by another model."""


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` so readers see the old file or the new one, never a partial one.

    The bytes go to a temporary sibling first, then are renamed over the target (os.replace
    locally, fsspec `mv` elsewhere).
    """
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
    """Write a small text output atomically (readers never see half a file)."""
    atomic_write_bytes(url, text.encode())


def save_checkpoint(state: dict[str, Any], url: str) -> None:
    """Serialize `state` (tensors, state dicts, plain values) to `url` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(url, buffer.getvalue())


def checkpoint_exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def load_checkpoint(url: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise CheckpointError(f"{url}: no checkpoint there")
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt/foreign file
        raise CheckpointError(f"{url}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """`load_state_dict(strict=True)` with an error naming the file and the keys/shapes that differ."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{origin}: weights do not fit this model ({'; '.join(parts)})")
    module.load_state_dict(state, strict=True)
