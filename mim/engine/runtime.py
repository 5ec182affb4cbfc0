"""Device, precision and determinism choices for a run."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger("mim")
_FELL_BACK: set[str] = set()  # params whose `auto` fallback was already reported in this process


class DeviceError(ValueError):
    """A device asked for by name is not usable on this machine."""


def resolve_device(choice: str, local_rank: int = 0, param: str = "train.device") -> torch.device:
    """"auto" -> the local CUDA device when there is one, else the CPU (said once, in one log line); "cuda" is a
    requirement: without a usable GPU it is a `DeviceError` naming `param`."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{param}=cuda but no CUDA device is visible (torch.cuda.is_available() is False); "
                          f"set {param} to auto (the CPU when there is no GPU) or cpu")
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if choice == "auto" and param not in _FELL_BACK:
        _FELL_BACK.add(param)
        log.info("%s=auto: no CUDA device visible, running on the CPU", param)
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
