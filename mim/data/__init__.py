"""Data: in-memory image data sets, their sources, batched GPU augmentation and step-based batching."""

from mim.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    CropParams,
    apply_crops,
    center_crops,
    full_crops,
    sample_crops,
)
from mim.data.dataset import UNLABELED, ImageTensors, balanced_subset
from mim.data.errors import CorruptImageError, CorruptImageWarning, EmptyDatasetError
from mim.data.fashion_mnist import DEFAULT_FASHION_MNIST, FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from mim.data.folder import IMAGE_EXTENSIONS, load_image_folder
from mim.data.loader import StepBatches
from mim.data.sources import SPLITS, load_dataset
from mim.data.synthetic import make_synthetic

__all__ = [
    "DEFAULT_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "UNLABELED",
    "BatchAugment",
    "CorruptImageError",
    "CorruptImageWarning",
    "CropParams",
    "EmptyDatasetError",
    "ImageTensors",
    "StepBatches",
    "apply_crops",
    "balanced_subset",
    "center_crops",
    "full_crops",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "make_synthetic",
    "read_idx",
    "sample_crops",
]
