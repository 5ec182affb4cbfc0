"""Encoders' last-layer features as pictures: every encoder's tokens on the same images, projected on their own
top-3 principal components and shown as RGB maps (what the report's `features.png` shows)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from mim.analysis.pca import feature_pca_rgb

if TYPE_CHECKING:
    from mim.models.encoder import Encoder


@torch.no_grad()
def feature_maps(encoders: Mapping[str, Encoder] | Iterable[tuple[str, Encoder]],
                 images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: [B, 3, h, w]} PCA pictures of each encoder's last-layer tokens (`Encoder.forward_tokens`, on its
    own grid) on `images` [B, C, H, W] (normalized as the encoders were trained). `encoders`: {name: encoder} or
    (name, encoder) pairs, e.g. a generator that loads one at a time; pass them in eval mode."""
    pairs = encoders.items() if isinstance(encoders, Mapping) else encoders
    out = {}
    for name, encoder in pairs:
        tokens = encoder.forward_tokens(images).float()
        out[name] = feature_pca_rgb(tokens)(tokens)
    return out
