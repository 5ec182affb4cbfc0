"""Teacher features computed once per training image, for small data sets trained over many epochs.

A cached feature stands for the training input only when the augmentation keeps the whole image: the crop
scale is [1, 1] (every box is the full image) and the only randomness left is the horizontal flip, which gets
its own cached copy. `cache_blocker` says why a configuration cannot be cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from mim.data.augment import BatchAugment, CropParams
from mim.progress import Progress

__all__ = ["FeatureCache", "cache_blocker"]


def cache_blocker(augment: BatchAugment) -> str | None:
    """Why per-image features cannot stand for `augment`'s training inputs; None when they can."""
    if augment.scale[0] < 1:
        return (f"data.augment.scale is {list(augment.scale)}: random crops change the teacher's input every step "
                "(set it to [1.0, 1.0] to cache teacher features)")
    return None


class FeatureCache:
    """[N, V, T, C] float16 features of N images in V orientations (V = 2 with flips: index 1 is mirrored)."""

    def __init__(self, features: Tensor) -> None:
        if features.ndim != 4 or features.shape[1] not in (1, 2):
            raise ValueError(f"cached features must be [N, 1 or 2, T, C], got {list(features.shape)}")
        self.features = features

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    @staticmethod
    def size_bytes(count: int, flips: bool, tokens: int, dim: int) -> int:
        """What a cache of `count` images would hold, before building it."""
        return count * (2 if flips else 1) * tokens * dim * 2

    @classmethod
    @torch.no_grad()
    def build(cls, features: Callable[[Tensor], Tensor], images: Tensor, augment: BatchAugment, *,
              device: torch.device, batch_size: int = 256, log: Callable[[str], None] | None = None) -> FeatureCache:
        """Run `features` ([B, C, H, W] normalized -> [B, T, C]) over every uint8 image of `images`, whole and
        (when `augment` flips) mirrored, exactly as the training augmentation would present them."""
        if (blocker := cache_blocker(augment)) is not None:
            raise ValueError(f"cannot cache teacher features: {blocker}")
        flips = (False, True) if augment.hflip_prob > 0 else (False,)
        n, out, start = len(images), None, time.perf_counter()
        with Progress(n, "teacher features (cache)", "images", logger="mim.teacher") as progress:
            for lo in range(0, n, batch_size):
                raw = images[lo : lo + batch_size].to(device, non_blocking=True)
                full = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).expand(len(raw), 4)
                views = [features(augment(raw, CropParams(boxes=full, flip=torch.full((len(raw),), f, device=device))))
                         for f in flips]
                chunk = torch.stack(views, dim=1).to(torch.float16)  # [b, V, T, C]
                if out is None:
                    out = torch.empty((n, *chunk.shape[1:]), dtype=torch.float16, device=device)
                out[lo : lo + len(raw)] = chunk
                progress.update(len(raw))
        if out is None:
            raise ValueError("cannot cache teacher features of an empty data set")
        cache = cls(out)
        if log is not None:
            log(f"teacher-feature cache: {n} images x {len(flips)} orientation(s), {cache.nbytes / 2**20:.0f} MiB, "
                f"{time.perf_counter() - start:.1f} s")
        return cache

    def lookup(self, indices: Tensor, flip: Tensor) -> Tensor:
        """[B, T, C] float32 features of images `indices`, mirrored where `flip` is set."""
        indices, flip = indices.to(self.features.device), flip.to(self.features.device)
        if self.features.shape[1] == 1 and bool(flip.any()):
            raise ValueError("the cache holds no mirrored features, but the batch flips images")
        return self.features[indices, flip.long()].float()
