"""Prediction targets: pixels (raw or per-patch normalized), and later HOG, centroid ids, teacher features."""

from mim.targets.pixels import normalize_patches, patchify, unpatchify

__all__ = ["normalize_patches", "patchify", "unpatchify"]
