"""`load_dataset`: one string names where the images come from (Fashion-MNIST, synthetic or a folder URL)."""

from __future__ import annotations

import fsspec

from mim.data.dataset import ImageTensors
from mim.data.fashion_mnist import DEFAULT_FASHION_MNIST, load_fashion_mnist
from mim.data.folder import load_image_folder
from mim.data.synthetic import make_synthetic
from mim.rng import derive_seed

SPLITS = ("train", "test")
_SYNTHETIC_DEFAULT_SIZE = 32


def load_dataset(
    source: str,
    split: str = "train",
    *,
    size: int | None = None,
    channels: int = 3,
    strict: bool = False,
    synthetic_size: int = 512,
    seed: int = 0,
) -> ImageTensors:
    """Load split `split` of the data set named by `source`.

    - `"fashion-mnist"` or `"fashion-mnist:/root"`: Fashion-MNIST IDX files ([N, 1, 28, 28]; `size` and
      `channels` are ignored, augmentation resizes and converts to RGB).
    - `"synthetic"` or `"synthetic:N"`: N (default `synthetic_size`) stripe images of side `size` (default 32);
      train and test use different seeds derived from `seed`.
    - anything else: a local path or fsspec URL of an image folder; `<url>/<split>` is used when it exists,
      else the folder itself. `size` is required.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    name, _, arg = source.partition(":")
    if name == "fashion-mnist":
        return load_fashion_mnist(arg or DEFAULT_FASHION_MNIST, split=split)  # type: ignore[arg-type]
    if name == "synthetic":
        return _synthetic(arg, split, size=size, channels=channels, default_n=synthetic_size, seed=seed)
    if size is None:
        raise ValueError(f"image folder source {source!r} needs an image size (size=...)")
    return load_image_folder(_split_folder(source, split), size=size, channels=channels, strict=strict)


def _synthetic(arg: str, split: str, *, size: int | None, channels: int, default_n: int, seed: int) -> ImageTensors:
    try:
        n = int(arg) if arg else default_n
    except ValueError:
        raise ValueError(f"synthetic source size must be an integer, as in 'synthetic:512'; got {arg!r}") from None
    return make_synthetic(
        n,
        size=size or _SYNTHETIC_DEFAULT_SIZE,
        channels=channels,
        seed=derive_seed(seed, "synthetic", split),
    )


def _split_folder(url: str, split: str) -> str:
    """`<url>/<split>` when that folder exists, else `url`."""
    fs, root = fsspec.core.url_to_fs(url)
    candidate = root.rstrip("/") + "/" + split
    if fs.isdir(candidate):
        return url.rstrip("/") + "/" + split
    return url
