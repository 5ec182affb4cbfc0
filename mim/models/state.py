"""Loading weights into a model strictly, with an error that says what does not fit."""

from __future__ import annotations

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """Weights or a checkpoint that cannot be used here: unreadable, or written by another model."""


def load_failure(err: Exception) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, in one short line: torch's own text runs to several
    lines and advises `weights_only=False`, which would run any code the file holds (never for a damaged or
    untrusted file)."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:  # the reason is between this marker and torch's pointer to its docs
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


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
