"""Prediction targets: pixels (raw or per-patch normalized), and later HOG, centroid ids, teacher features."""

from mim.targets.centroids import CentroidTokenizer, codebook_usage
from mim.targets.pixels import from_patch_vectors, normalize_patches, patch_vectors, patchify, unpatchify

__all__ = ["CentroidTokenizer", "codebook_usage", "from_patch_vectors", "normalize_patches", "patch_vectors",
           "patchify", "unpatchify"]
