"""Feature maps as pictures: token features projected on their top-3 principal components, shown as RGB."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def feature_pca_rgb(reference: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping [B, N, C] features on a square grid to [B, 3, h, w] pictures in [0, 1], by projecting
    on `reference`'s top-3 principal components, scaled by `reference`'s range (so panels are comparable)."""
    flat = reference.flatten(0, 1).float()
    mean = flat.mean(0)
    v = torch.linalg.svd(flat - mean, full_matrices=False)[2][:3].T  # [C, <=3], deterministic
    proj = (flat - mean) @ v
    lo, hi = proj.amin(0), proj.amax(0)

    def to_rgb(feats: torch.Tensor) -> torch.Tensor:
        b, n, _ = feats.shape
        side = int(n**0.5)
        x = (((feats.float() - mean) @ v - lo) / (hi - lo + 1e-6)).clamp(0, 1)  # [B, N, <=3]
        x = F.pad(x, (0, 3 - x.shape[-1]))
        return x.transpose(1, 2).reshape(b, 3, side, side)

    return to_rgb


def feature_panels(target: torch.Tensor, prediction: torch.Tensor, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Feature targets and predictions ([B, N, C]) as reconstruction panels: both on the target's top-3
    principal components, resized to `like`'s images and spread over their value range (so the grid's
    de-normalization shows them like the images beside them)."""
    to_rgb = feature_pca_rgb(target)
    lo, hi = like.amin(), like.amax()

    def as_image(feats: torch.Tensor) -> torch.Tensor:
        return lo + (hi - lo) * F.interpolate(to_rgb(feats), size=like.shape[-2:])

    return {"target": as_image(target), "prediction": as_image(prediction)}
