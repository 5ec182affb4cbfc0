"""Fixed 2-D sine-cosine position embeddings (MAE convention)."""

from __future__ import annotations

import torch


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[M] positions -> [M, dim] embedding: dim/2 sines then dim/2 cosines."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double()[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """2-D sin-cos embedding of a token grid, row-major, as [1, (1 +) H*W, dim] float32.

    The first half of the channels encodes the column (x), the second half the row (y). With
    `cls_token` a zero row is prepended for the class token.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, xs.reshape(-1)), _sincos_1d(dim // 2, ys.reshape(-1))], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)
