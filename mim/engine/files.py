"""Where a pre-training run writes: the caller (a pipeline stage, a one-off run) decides; the engine only writes
there. Kept free of torch so that path modules can import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class PretrainFiles:
    """Where one pre-training run writes (paths or fsspec URLs)."""

    checkpoint: str  # full training state, rewritten atomically every `ckpt_every` steps
    encoder: str  # the exported encoder (safetensors, architecture in its metadata)
    model: str  # the full model: every part of the method less frozen teachers (safetensors, mim.methods.weights)
    history: str  # step, loss, lr and the method's loss parts, CSV
    parts: str  # a folder: one `step,<name>` CSV per loss part (and the total), each its own DVC plot
    metrics: str  # steps, final loss, wall time, img/s, JSON
    loss_plot: str
    reconstructions: str
