"""MAE random masking: each sample keeps a uniformly random subset of its tokens.

Follows MAE / HuggingFace ViTMAE exactly (argsort of per-token noise, small noise is kept) so a
noise tensor gives the same mask here as there when the count rule is `official` (see `masking_from_noise`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mim.masking.checks import MaskCount, check_batch_size, check_positive_int, check_ratio, count_for_ratio
from mim.masking.types import TokenMask


def masking_from_noise(noise: Tensor, ratio: float, count: MaskCount = "round") -> TokenMask:
    """Mask the `num_masked = count_for_ratio(N, ratio, count)` tokens with the largest noise in each row.

    Steps as in MAE: `ids_shuffle = argsort(noise)` (ascending, small noise is kept),
    `ids_restore = argsort(ids_shuffle)`, `ids_keep = ids_shuffle[:, :len_keep]`, and the mask is
    `[0] * len_keep + [1] * num_masked` un-shuffled with `ids_restore`.

    Remark on counts: MAE and HuggingFace use `len_keep = int(N * (1 - ratio))` (`count="official"`),
    which rounds the masked count *up*; `round` rounds it half up. The two agree for the usual settings
    (ratio 0.75 with N = 49, 64, 196, 256, 576; ratio 0.5; ratio 0.6 with N = 196, 256, 576) but differ
    whenever the fractional part of `N * ratio` is in (0, 0.5), e.g. ratio 0.6 with N = 64 masks 39
    (official) or 38 (round), and ratio 0.4 with N = 196 masks 79 or 78. Half-up rounding also avoids the
    float floor trap `int(10 * (1 - 0.9)) == 0`.

    Args:
        noise: Per-token scores, [B, N]; any float values, ties broken by `argsort`.
        ratio: Fraction of tokens to mask, in [0, 1).
        count: The rule turning `ratio` into a count (`mim.masking.checks.MaskCount`).

    Returns:
        A `TokenMask` on `noise.device` with `N - num_masked` visible tokens per sample.
    """
    ratio = check_ratio(ratio)
    if noise.ndim != 2:
        raise ValueError(f"noise must be [B, N], got shape {tuple(noise.shape)}")
    batch, num_tokens = noise.shape
    len_keep = num_tokens - count_for_ratio(num_tokens, ratio, count)
    ids_shuffle = torch.argsort(noise, dim=1)  # [B, N], ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # [B, N]
    ids_keep = ids_shuffle[:, :len_keep]  # [B, K]
    mask = torch.ones(batch, num_tokens, device=noise.device)  # [B, N], shuffled order
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # [B, N], original order, 1 = masked
    return TokenMask(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def random_masking(
    batch_size: int,
    num_tokens: int,
    ratio: float,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    count: MaskCount = "round",
) -> TokenMask:
    """Draw MAE random masks with noise from `generator` (never the global RNG).

    Args:
        batch_size: Number of samples B.
        num_tokens: Tokens per sample N.
        ratio: Fraction of tokens to mask, in [0, 1).
        generator: Source of the uniform noise; the noise is drawn on `generator.device`.
        device: Where the returned tensors live; defaults to `generator.device`.
        count: The rule turning `ratio` into a count (`mim.masking.checks.MaskCount`).

    Returns:
        A `TokenMask` with exactly `count_for_ratio(N, ratio, count)` masked tokens per sample.
    """
    check_batch_size(batch_size)
    check_positive_int("num_tokens", num_tokens)
    check_ratio(ratio)
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=generator.device)  # [B, N]
    token_mask = masking_from_noise(noise, ratio, count)
    return token_mask if device is None else token_mask.to(device)
