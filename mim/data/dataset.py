"""`ImageTensors`: a whole image data set held in memory as one uint8 tensor."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from mim.data.errors import EmptyDatasetError

UNLABELED = -1


def subset_indices(total: int, n: int, generator: torch.Generator) -> Tensor:
    """[n] int64 indices of `total` drawn without replacement, in ascending order: the one rule for seeded subsets
    (in-memory sets and shards draw the same images for the same generator)."""
    return torch.randperm(total, generator=generator)[:n].sort().values


def balanced_subset(labels: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """[M] int64 indices (ascending) of a class-balanced `fraction` of the labelled samples: from each class,
    `max(1, round(fraction * its count))` samples, the first in one seeded permutation of all samples. The draw does
    not depend on `fraction`, so for one generator seed the 1 % subset lies inside the 10 % one (the low-label
    protocol: the same images for every method at a given seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if labels.ndim != 1 or (labels < 0).any():
        raise ValueError("a class-balanced subset needs a class label (>= 0) on every sample")
    order = torch.randperm(len(labels), generator=generator)  # [N] one permutation, whatever the fraction
    ranked = labels[order]  # [N] labels in drawn order
    by_class = torch.sort(ranked, stable=True)  # drawn order kept within each class
    counts = torch.bincount(ranked)  # [K] samples per class
    starts = counts.cumsum(0) - counts  # [K] where each class begins in by_class
    rank = torch.arange(len(labels)) - starts[by_class.values]  # [N] position within its class
    quota = (counts.double() * fraction).round().clamp(min=1).long()  # [K]
    return order[by_class.indices[rank < quota[by_class.values]]].sort().values


@dataclass
class ImageTensors:
    """Images, labels and class names of a data set, plus where they came from.

    Small and medium data sets fit in (GPU) memory as a single uint8 tensor, which makes batching a
    plain index operation and keeps augmentation on the device.
    """

    images: Tensor  # [N, C, H, W] uint8
    labels: Tensor  # [N] int64, -1 = unlabeled
    classes: list[str]
    source: str
    skipped: list[str] = dataclasses.field(default_factory=list)  # files that could not be decoded

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise TypeError(f"{self.source}: images must be a uint8 tensor [N, C, H, W], got {_describe(self.images)}")
        if not isinstance(self.labels, Tensor) or self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise TypeError(f"{self.source}: labels must be an int64 tensor [N], got {_describe(self.labels)}")
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise ValueError(f"{self.source}: {n} images but {self.labels.shape[0]} labels")
        if n == 0:
            raise EmptyDatasetError(f"data set from {self.source} has no samples")
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"{self.source}: images must have 1 or 3 channels, got {self.images.shape[1]}")
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < UNLABELED or hi >= len(self.classes):
            raise ValueError(
                f"{self.source}: labels span [{lo}, {hi}] but must be -1 (unlabeled) or in [0, {len(self.classes)})"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Channels the images are stored with (1 grey, 3 RGB)."""
        return self.images.shape[1]

    @property
    def is_labeled(self) -> bool:
        """True when every sample has a class label (none is -1)."""
        return bool((self.labels >= 0).all())

    def in_memory(self) -> ImageTensors:
        """Self (a `ShardSplit` decodes itself here)."""
        return self

    def to(self, device: torch.device | str) -> ImageTensors:
        """A copy with images and labels on `device` (self when already there)."""
        device = torch.device(device)
        if self.images.device == device and self.labels.device == device:
            return self
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, n: int, generator: torch.Generator) -> ImageTensors:
        """`n` samples drawn without replacement (kept in their original order); self if `n >= len(self)`.

        Used to train or evaluate on a small, reproducible slice of a large data set.
        """
        if n < 1:
            raise ValueError(f"{self.source}: subset size must be >= 1, got {n}")
        if n >= len(self):
            return self
        idx = subset_indices(len(self), n, generator)
        return dataclasses.replace(
            self,
            images=self.images[idx.to(self.images.device)],
            labels=self.labels[idx.to(self.labels.device)],
            source=f"{self.source}[subset {n}]",
        )

    def take(self, indices: Tensor, note: str) -> ImageTensors:
        """The samples at `indices` (e.g. from `balanced_subset`), `note` saying which in the source name."""
        return dataclasses.replace(self, images=self.images[indices.to(self.images.device)],
                                   labels=self.labels[indices.to(self.labels.device)], source=f"{self.source}[{note}]")

    def digest(self) -> str:
        """Short sha256 hex digest of the shapes, image bytes and label bytes (for lineage records)."""
        h = hashlib.sha256()
        h.update(repr(tuple(self.images.shape)).encode())
        h.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.labels.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__
