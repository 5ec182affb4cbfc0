"""Tensor operations that apply a `TokenMask`: gather visible tokens, restore the full sequence, masked means."""

from __future__ import annotations

import torch
from torch import Tensor


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """Pick tokens `ids` of each sample, e.g. the visible tokens an MAE encoder sees.

    Args:
        x: Tokens, [B, N, D].
        ids: Token indices per sample, [B, K] long.

    Returns:
        The selected tokens, [B, K, D], in the order of `ids`.
    """
    if x.ndim != 3 or ids.ndim != 2 or ids.shape[0] != x.shape[0]:
        raise ValueError(f"expected x [B, N, D] and ids [B, K], got {tuple(x.shape)} and {tuple(ids.shape)}")
    index = ids.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # [B, K, D]
    return x.gather(1, index)


def restore_tokens(x_visible: Tensor, ids_restore: Tensor, fill: Tensor) -> Tensor:
    """Append `fill` for the masked slots and un-shuffle to original token order (MAE decoder input).

    Args:
        x_visible: Visible tokens in `ids_keep` order, [B, K, D].
        ids_restore: Inverse permutation from `TokenMask.ids_restore`, [B, N].
        fill: Content of the masked slots: one token [D] or [1, 1, D] (a learned mask token),
            or one per masked slot [B, N - K, D]. Cast to `x_visible.dtype`.

    Returns:
        The full sequence in original order, [B, N, D].
    """
    if x_visible.ndim != 3 or ids_restore.ndim != 2 or ids_restore.shape[0] != x_visible.shape[0]:
        raise ValueError(
            f"expected x_visible [B, K, D] and ids_restore [B, N], got {tuple(x_visible.shape)} "
            f"and {tuple(ids_restore.shape)}"
        )
    batch, num_visible, dim = x_visible.shape
    num_masked = ids_restore.shape[1] - num_visible
    if num_masked < 0:
        raise ValueError(f"more visible tokens ({num_visible}) than total tokens ({ids_restore.shape[1]})")
    if fill.shape in ((dim,), (1, 1, dim)):
        fill = fill.reshape(1, 1, dim).expand(batch, num_masked, dim)
    elif fill.shape != (batch, num_masked, dim):
        raise ValueError(
            f"fill must have shape ({dim},), (1, 1, {dim}) or ({batch}, {num_masked}, {dim}), got {tuple(fill.shape)}"
        )
    full = torch.cat([x_visible, fill.to(x_visible.dtype)], dim=1)  # [B, N, D], visible ++ masked
    index = ids_restore.unsqueeze(-1).expand(-1, -1, dim)  # [B, N, D]
    return full.gather(1, index)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over masked positions, `sum(values * mask) / mask.sum()` (MAE/SimMIM loss reduction).

    Args:
        values: Per-token values, e.g. losses, [B, N].
        mask: Weights, 1 = masked, [B, N].

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If the shapes differ or (on the CPU) the mask selects nothing (the mean would be 0/0).
    """
    if values.shape != mask.shape:
        raise ValueError(f"values and mask shapes differ: {tuple(values.shape)} vs {tuple(mask.shape)}")
    weights = mask.to(values.dtype)
    total = weights.sum()
    if total.device.type == "cpu" and not bool(total > 0):  # no host sync on accelerators
        raise ValueError(f"masked_mean needs a non-empty mask, got mask sum {float(total)}")
    return (values * weights).sum() / total
