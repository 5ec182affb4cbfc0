"""Pixel targets: patchify / unpatchify, per-patch normalization (MAE's norm-pix loss) and sliding-window
normalization (CIM's ResPix)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, p*p*C], patches row-major, each flattened in (py, px, c) order (MAE layout)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify`: [B, N, p*p*C] -> [B, C, H, W]."""
    b = patches.shape[0]
    gh, gw = grid
    p = patch_size
    x = patches.reshape(b, gh, gw, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * p, gw * p)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardization over the last dim (unbiased variance, as MAE does)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def patch_vectors(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C*p*p], patches row-major, each flattened in (c, py, px) order (F.unfold layout,
    the order CCViT's centroid codebook uses)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def from_patch_vectors(vectors: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int) -> torch.Tensor:
    """Inverse of `patch_vectors`: [B, N, C*p*p] -> [B, C, H, W]."""
    b = vectors.shape[0]
    gh, gw = grid
    p = patch_size
    x = vectors.reshape(b, gh, gw, channels, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, gh * p, gw * p)


def sliding_window_stats(images: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) [B, C, H, W] of the `window` x `window` neighbourhood centred on each pixel (stride 1, per
    channel; at borders only the pixels inside the image count). `window` must be odd so the window is centred."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive size, got {window}")
    x = images.float()
    shift = x.mean(dim=(-2, -1), keepdim=True)  # shift-invariant; less cancellation in E[x^2] - E[x]^2
    x = x - shift
    pool = lambda t: F.avg_pool2d(t, window, stride=1, padding=window // 2, count_include_pad=False)  # noqa: E731
    mean = pool(x)
    return mean + shift, (pool(x * x) - mean * mean).clamp_min(0)


def sliding_window_normalize(images: torch.Tensor, window: int, eps: float = 1e-6) -> torch.Tensor:
    """[B, C, H, W] -> each pixel standardized by the mean and variance of the `window` x `window` neighbourhood
    centred on it: CIM's ResPix target, local contrast without patch seams."""
    mean, var = sliding_window_stats(images, window)
    return (images.float() - mean) / (var + eps).sqrt()
