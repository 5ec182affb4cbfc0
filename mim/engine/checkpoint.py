"""Atomic checkpoints through fsspec, loaded with `weights_only=True`."""

from __future__ import annotations

import io
from typing import Any

import torch

from mim.io import atomic_write, exists, read_bytes
from mim.models.state import CheckpointError, load_failure, load_state_strict

__all__ = ["CheckpointError", "checkpoint_exists", "load_checkpoint", "load_state_strict", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], url: str) -> None:
    """Serialize `state` (tensors, state dicts, plain values) to `url` atomically, streamed into the temporary file
    (the state is not held a second time as bytes)."""
    atomic_write(url, lambda f: torch.save(state, f))


def checkpoint_exists(url: str) -> bool:
    return exists(url)


def load_checkpoint(url: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    if not exists(url):
        raise CheckpointError(f"{url}: no checkpoint there")
    data = read_bytes(url, "checkpoint")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt/foreign file
        raise CheckpointError(f"{url}: not a readable checkpoint ({load_failure(err)}); the file is damaged or not a "
                              "mim checkpoint: remove it to start over") from None
