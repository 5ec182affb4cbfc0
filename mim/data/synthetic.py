"""A synthetic labeled data set of oriented stripe patterns, for tests and smoke runs."""

from __future__ import annotations

import math

import torch

from mim.data.dataset import ImageTensors
from mim.rng import generator_for

_CHUNK = 4096


def make_synthetic(n: int, *, size: int = 32, channels: int = 3, num_classes: int = 4, seed: int = 0) -> ImageTensors:
    """`n` images [n, channels, size, size] uint8 whose class sets the stripes' angle and frequency.

    Each image gets a random phase, contrast, brightness, small angle jitter, per-channel gain and
    pixel noise, so a tiny model has something to learn but the classes stay clearly separable.
    Deterministic for a given `seed`; classes are balanced (`i % num_classes`, then shuffled).
    """
    if n < 1:
        raise ValueError(f"synthetic data set size must be >= 1, got {n}")
    if size < 4:
        raise ValueError(f"synthetic image size must be >= 4, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"synthetic channels must be 1 or 3, got {channels}")
    if num_classes < 1:
        raise ValueError(f"synthetic num_classes must be >= 1, got {num_classes}")

    gen = generator_for(seed, "synthetic")
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]  # [n] int64
    cls = labels.double()
    # Class signature: angle evenly spread over [0, pi) and a frequency cycling through 4 values.
    angle = math.pi * cls / num_classes + (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * (
        0.25 * math.pi / num_classes
    )  # [n]
    cycles = (2.0 + 1.5 * (labels % 4).double()) * min(1.0, size / 32)  # [n] cycles across the image
    phase = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi  # [n]
    contrast = 0.3 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)  # [n] amplitude
    brightness = 0.4 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)  # [n]
    gain = 0.8 + 0.4 * torch.rand(n, channels, generator=gen, dtype=torch.float64)  # [n, C]

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # [H] in (0, 1)
    y, x = coords[:, None], coords[None, :]  # [H, 1], [1, W]
    images = torch.empty(n, channels, size, size, dtype=torch.uint8)  # [n, C, H, W] uint8
    for start in range(0, n, _CHUNK):  # fixed-size chunks bound memory; draw order stays deterministic
        sl = slice(start, min(start + _CHUNK, n))
        a, f, p = angle[sl].float(), cycles[sl].float(), phase[sl].float()
        along = x * torch.cos(a)[:, None, None] + y * torch.sin(a)[:, None, None]  # [b, H, W]
        wave = torch.sin(2 * math.pi * f[:, None, None] * along + p[:, None, None])  # [b, H, W]
        pattern = brightness[sl, None, None].float() + contrast[sl, None, None].float() * wave  # [b, H, W]
        values = pattern[:, None] * gain[sl, :, None, None].float()  # [b, C, H, W]
        values += 0.04 * torch.randn(values.shape, generator=gen)
        images[sl] = (values.clamp_(0, 1) * 255).round_().to(torch.uint8)
    return ImageTensors(
        images=images,
        labels=labels,
        classes=[f"class{i}" for i in range(num_classes)],
        source="synthetic",
    )
