"""The `TokenMask` record shared by every masking strategy.

A mask is stored three ways at once because the consumers differ: MAE-style encoders gather only
the visible tokens (`ids_keep`), decoders un-shuffle `visible ++ mask tokens` back to image order
(`ids_restore`), and losses weight per-token errors (`mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenMask:
    """A batch of token masks with the same number of masked tokens on every sample.

    Attributes:
        ids_keep: Visible token indices in the order the encoder sees them.
        ids_restore: Inverse permutation: for each original token, its position in the
            `visible ++ masked` sequence.
        mask: Float mask in original token order, 1 = masked, 0 = visible.
    """

    ids_keep: Tensor  # [B, K] long
    ids_restore: Tensor  # [B, N] long
    mask: Tensor  # [B, N] float, 1 = masked

    def __post_init__(self) -> None:
        if self.ids_keep.ndim != 2 or self.ids_restore.ndim != 2 or self.mask.ndim != 2:
            raise ValueError(
                "TokenMask tensors must be 2-D, got shapes "
                f"ids_keep={tuple(self.ids_keep.shape)}, ids_restore={tuple(self.ids_restore.shape)}, "
                f"mask={tuple(self.mask.shape)}"
            )
        if self.mask.shape != self.ids_restore.shape or self.ids_keep.shape[0] != self.mask.shape[0]:
            raise ValueError(
                "TokenMask shapes disagree: "
                f"ids_keep={tuple(self.ids_keep.shape)}, ids_restore={tuple(self.ids_restore.shape)}, "
                f"mask={tuple(self.mask.shape)}"
            )
        if self.ids_keep.shape[1] > self.mask.shape[1]:
            raise ValueError(
                f"TokenMask has more visible ({self.ids_keep.shape[1]}) than total ({self.mask.shape[1]}) tokens"
            )

    @property
    def batch_size(self) -> int:
        """Number of samples B."""
        return self.mask.shape[0]

    @property
    def num_tokens(self) -> int:
        """Tokens per sample N."""
        return self.mask.shape[1]

    @property
    def num_visible(self) -> int:
        """Visible tokens per sample K."""
        return self.ids_keep.shape[1]

    @property
    def num_masked(self) -> int:
        """Masked tokens per sample N - K."""
        return self.num_tokens - self.num_visible

    @property
    def bool_mask(self) -> Tensor:
        """The mask as booleans, True = masked."""
        return self.mask.bool()  # [B, N]

    @property
    def ids_shuffle(self) -> Tensor:
        """Original token indices in `visible ++ masked` order (inverse of `ids_restore`)."""
        return torch.argsort(self.ids_restore, dim=1)  # [B, N]

    @property
    def ids_masked(self) -> Tensor:
        """Masked token indices, in the order their mask tokens sit after the visible ones."""
        return self.ids_shuffle[:, self.num_visible :]  # [B, N - K]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenMask:
        """A copy with every tensor on `device`."""
        return TokenMask(
            ids_keep=self.ids_keep.to(device, non_blocking=non_blocking),
            ids_restore=self.ids_restore.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
        )

    def slice(self, start: int, stop: int) -> TokenMask:
        """The masks of samples `start:stop`, e.g. one rank's share of a globally drawn batch."""
        batch = self.batch_size
        if not (0 <= start <= stop <= batch):
            raise ValueError(f"slice [{start}, {stop}) is out of range for a batch of {batch}")
        return TokenMask(
            ids_keep=self.ids_keep[start:stop],
            ids_restore=self.ids_restore[start:stop],
            mask=self.mask[start:stop],
        )


def token_mask_from_bool(mask: Tensor) -> TokenMask:
    """Build a `TokenMask` from a boolean mask (True = masked) with equal masked counts per row.

    Visible ids come first in ascending order, then masked ids in ascending order (a stable sort),
    so encoders that gather visible tokens see them in image order.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
    mask = mask.bool()  # [B, N], True = masked
    counts = mask.sum(dim=1)  # [B]
    num_masked = int(counts[0]) if counts.numel() else 0
    if counts.numel() and not bool((counts == num_masked).all()):
        raise ValueError(f"every row must mask the same number of tokens, got counts {counts.tolist()}")
    ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # [B, N], visible first
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # [B, N]
    num_visible = mask.shape[1] - num_masked
    return TokenMask(ids_keep=ids_shuffle[:, :num_visible], ids_restore=ids_restore, mask=mask.float())
