"""Histograms of oriented gradients as a MIM target (MaskFeat, FastMIM, DMJD), batched and on any device.

Per image channel: gradients -> per-pixel unsigned orientation in [0, pi) and magnitude -> hard, magnitude-
weighted binning into `bins` orientations -> pooled over `cell` x `cell` pixel cells -> normalized per cell
and channel -> each patch's cells concatenated as one target vector [B, N, cells_per_patch^2 * C * bins],
in (cell row, cell column, channel, bin) order.

Two flavours (the same binning):
- "dmjd": raw 0..255 pixels, central differences (zero at the image border), cell *mean*, LayerNorm
  without affine over the bins of each cell and channel.
- "maskfeat" (also FastMIM's): Sobel filters (reflect padding, so a flat border has no gradient), cell *sum*,
  L2 norm over the bins of each cell and channel.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Flavour = Literal["dmjd", "maskfeat"]


def image_gradients(pixels: torch.Tensor, flavour: Flavour) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C, H, W] -> (gx, gy), each [B, C, H, W]."""
    if flavour == "dmjd":
        gx, gy = torch.zeros_like(pixels), torch.zeros_like(pixels)
        gx[..., :, 1:-1] = pixels[..., :, 2:] - pixels[..., :, :-2]
        gy[..., 1:-1, :] = pixels[..., 2:, :] - pixels[..., :-2, :]
        return gx, gy
    # Sobel as separable differences on the reflect-padded image: exact zeros where the image is symmetric
    # (a flat border), which a float convolution would turn into noise in a random orientation bin.
    xp = F.pad(pixels, (1, 1, 1, 1), mode="reflect")
    dx = xp[..., :, 2:] - xp[..., :, :-2]  # [B, C, H + 2, W]
    dy = xp[..., 2:, :] - xp[..., :-2, :]  # [B, C, H, W + 2]
    gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]
    gy = dy[..., :, :-2] + 2 * dy[..., :, 1:-1] + dy[..., :, 2:]
    return gx, gy


def hog_cells(pixels: torch.Tensor, *, cell: int = 8, bins: int = 9, flavour: Flavour = "dmjd") -> torch.Tensor:
    """[B, C, H, W] pixels -> normalized histograms [B, C, bins, H / cell, W / cell]."""
    b, c, h, w = pixels.shape
    if h % cell or w % cell:
        raise ValueError(f"image {h}x{w} is not divisible into {cell}-px HOG cells")
    x = pixels.float()
    gx, gy = image_gradients(x, flavour)
    magnitude = torch.sqrt(gx * gx + gy * gy)
    angle = torch.atan2(gy, gx) % math.pi  # unsigned orientation in [0, pi)
    index = (angle / (math.pi / bins)).long().clamp_(0, bins - 1)  # hard binning
    hist = torch.zeros(b, c, bins, h, w, device=x.device, dtype=x.dtype)
    hist.scatter_(2, index.unsqueeze(2), magnitude.unsqueeze(2))  # magnitude-weighted, one bin per pixel
    pooled = F.avg_pool2d(hist.view(b, c * bins, h, w), cell).view(b, c, bins, h // cell, w // cell)
    if flavour == "dmjd":
        return F.layer_norm(pooled.transpose(2, -1), (bins,)).transpose(2, -1)  # over bins, no affine
    return F.normalize(pooled * cell * cell, p=2, dim=2)  # cell sum, L2 over bins


def hog_targets(pixels: torch.Tensor, patch_size: int, *, cell: int, bins: int = 9,
                flavour: Flavour = "dmjd") -> torch.Tensor:
    """[B, C, H, W] pixels -> per-patch HOG vectors [B, N, (patch/cell)^2 * C * bins], patches row-major."""
    if patch_size % cell:
        raise ValueError(f"patch_size {patch_size} is not a multiple of the HOG cell size {cell}")
    hist = hog_cells(pixels, cell=cell, bins=bins, flavour=flavour)  # [B, C, K, h, w]
    b, c, k, h, w = hist.shape
    per = patch_size // cell
    x = hist.view(b, c, k, h // per, per, w // per, per)  # [B, C, K, gh, py, gw, px]
    return x.permute(0, 3, 5, 4, 6, 1, 2).reshape(b, (h // per) * (w // per), per * per * c * k)


def hog_dim(patch_size: int, cell: int, channels: int, bins: int = 9) -> int:
    """The length of one patch's HOG vector."""
    return (patch_size // cell) ** 2 * channels * bins


class HogTarget(torch.nn.Module):
    """Normalized student images -> per-patch HOG vectors [B, N, D] (no gradient, float32, outside autocast)."""

    def __init__(self, patch_size: int, channels: int, *, mean: tuple[float, ...], std: tuple[float, ...],
                 cell: int = 2, bins: int = 9, flavour: Flavour = "dmjd") -> None:
        super().__init__()
        if patch_size % cell:
            raise ValueError(f"HOG cell {cell} px does not divide the {patch_size}-px patches (hog.cell)")
        self.patch_size, self.cell, self.bins, self.flavour = patch_size, cell, bins, flavour
        self.dim = hog_dim(patch_size, cell, channels, bins)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            pixels = (images.float() * self.std + self.mean) * 255  # raw 0..255, as the HOG papers use
            return hog_targets(pixels, self.patch_size, cell=self.cell, bins=self.bins, flavour=self.flavour)
