"""Frozen-encoder features for evaluation, extracted once in batches."""

from __future__ import annotations

from typing import Literal

import torch

from mim.data import BatchAugment
from mim.engine.runtime import autocast
from mim.models.encoder import Encoder
from mim.progress import Progress


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    images: torch.Tensor,
    augment: BatchAugment,
    *,
    pool: Literal["cls", "mean"] = "mean",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    desc: str = "features",
) -> torch.Tensor:
    """[N, C, H, W] uint8 -> [N, D] float32 pooled features of the frozen `encoder` (eval transform:
    the whole image resized to the model's size, normalized as in training). bf16 on CUDA. Progress is
    shown as `desc` (logger `mim.evaluate`)."""
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    out = []
    with Progress(len(images), desc, "images", logger="mim.evaluate") as progress:
        for start in range(0, len(images), batch_size):
            x = augment.eval(images[start : start + batch_size].to(device, non_blocking=True))
            with autocast(device, dtype):
                out.append(encoder.pooled(x, pool).float().cpu())
            progress.update(len(x))
    return torch.cat(out)


def pixel_features(images: torch.Tensor, augment: BatchAugment, batch_size: int = 4096) -> torch.Tensor:
    """The raw-pixel baseline: each image resized and normalized like the encoder's input, flattened."""
    return torch.cat([augment.eval(images[i : i + batch_size]).flatten(1) for i in range(0, len(images), batch_size)])
