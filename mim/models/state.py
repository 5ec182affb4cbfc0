"""Loading weights into a model strictly, with an error that says what does not fit."""

from __future__ import annotations

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """Weights or a checkpoint that cannot be used here: unreadable, or written by another model."""


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
