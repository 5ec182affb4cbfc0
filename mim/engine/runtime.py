"""Device, precision and determinism choices for a run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """"auto" -> the local CUDA device when there is one, else the CPU; "cuda" without a GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible (set train.device=auto or cpu)")
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA for "auto"; nothing on CPU unless asked for explicitly."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device (use bf16 or off on the CPU)")
    return torch.float16 if amp == "fp16" else torch.bfloat16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (bit-identical reruns and resumes) at some speed cost."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled


class GpuOutOfMemoryError(RuntimeError):
    """The GPU ran out of memory; the message names the batch size param to lower and its current value."""


@contextlib.contextmanager
def oom_hint(what: str, lower: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error inside the block into `GpuOutOfMemoryError` saying what to lower, e.g.
    `oom_hint("pre-training", "train.batch_size (now 256) or raise train.accum_steps (now 1)")`."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        raise GpuOutOfMemoryError(f"the GPU ran out of memory during {what}: lower {lower}") from err
