"""Fashion-MNIST from its four IDX files (gzipped or raw)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mim.data.dataset import ImageTensors

DEFAULT_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist` (as root; `make setup` does this) "
    "or point data.source at a folder holding the four IDX files"
)

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX array file (the MNIST format); `.gz` files are decompressed on the fly.

    Returns a native-endian, writable array with the dimensions stored in the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())
    except gzip.BadGzipFile as e:
        raise ValueError(f"{path}: not a valid gzip file ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{bytes(raw[:4]).hex()} "
            "(expected 0x0000 then a type code in 08/09/0B/0C/0D/0E and a dimension count >= 1)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: dimensions {dims} of {dtype.name} need {expected} data bytes, found {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False)


def load_fashion_mnist(
    root: str | os.PathLike[str] = DEFAULT_FASHION_MNIST, split: Literal["train", "test"] = "train"
) -> ImageTensors:
    """Load one split of Fashion-MNIST: images [N, 1, 28, 28] uint8 and labels 0..9.

    `root` holds `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and the `t10k-` pair.
    """
    if split not in _FILE_PREFIX:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected one of {sorted(_FILE_PREFIX)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {root} does not exist; {_INSTALL_HINT}")
    prefix = _FILE_PREFIX[split]
    images = read_idx(_find_file(root, f"{prefix}-images-idx3-ubyte"))  # [N, 28, 28] uint8
    labels = read_idx(_find_file(root, f"{prefix}-labels-idx1-ubyte"))  # [N] uint8
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{root}: {split} images must be uint8 [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} {split} images but labels of shape {labels.shape}")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{root}: {split} label {int(labels.max())} outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return ImageTensors(
        images=torch.from_numpy(images).unsqueeze(1),  # [N, 1, 28, 28] uint8
        labels=torch.from_numpy(labels.astype(np.int64)),  # [N] int64
        classes=list(FASHION_MNIST_CLASSES),
        source=f"fashion-mnist:{root}:{split}",
    )


def _find_file(root: Path, name: str) -> Path:
    """`root/name.gz` or `root/name`, whichever exists (gzipped preferred)."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file {root / name}[.gz] not found; {_INSTALL_HINT}")
