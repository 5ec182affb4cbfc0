"""Prediction targets: pixels (raw, per-patch or sliding-window normalized), centroid ids, teacher features."""

from mim.targets.centroids import CentroidTokenizer, codebook_usage
from mim.targets.pixels import (
    from_patch_vectors,
    normalize_patches,
    patch_vectors,
    patchify,
    sliding_window_normalize,
    unpatchify,
)

__all__ = ["CentroidTokenizer", "codebook_usage", "from_patch_vectors", "normalize_patches", "patch_vectors",
           "patchify", "sliding_window_normalize", "unpatchify"]
