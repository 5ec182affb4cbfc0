"""`load_dataset`: one string names where the images come from (Fashion-MNIST, synthetic or a folder URL)."""

from __future__ import annotations

import posixpath

from mim.data.dataset import ImageTensors
from mim.data.fashion_mnist import DEFAULT_FASHION_MNIST, load_fashion_mnist
from mim.data.folder import load_image_folder
from mim.data.synthetic import make_synthetic
from mim.io import check_reachable, filesystem
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
    background: tuple[int, int, int] = (255, 255, 255),
    classes: list[str] | None = None,
    reference: str = "the training split",
) -> ImageTensors:
    """Load split `split` of the data set named by `source`.

    - `"fashion-mnist"` or `"fashion-mnist:/root"`: Fashion-MNIST IDX files ([N, 1, 28, 28]; `size` and
      `channels` are ignored, augmentation resizes and converts to RGB).
    - `"synthetic"` or `"synthetic:N"`: N (default `synthetic_size`) stripe images of side `size` (default 32);
      train and test use different seeds derived from `seed`.
    - anything else: a local path or fsspec URL of an image folder: `<url>/<split>`, which must exist (split "."
      is the folder itself; `split_folder`). `size` is required. `classes` (of the split `reference` names)
      aligns the labels by class name (`mim.data.folder.list_image_folder`).
    """
    name, _, arg = source.partition(":")
    if name in ("fashion-mnist", "synthetic") and split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of {name}; expected one of {SPLITS}")
    if name == "fashion-mnist":
        return load_fashion_mnist(arg or DEFAULT_FASHION_MNIST, split=split)  # type: ignore[arg-type]
    if name == "synthetic":
        return _synthetic(arg, split, size=size, channels=channels, default_n=synthetic_size, seed=seed)
    if size is None:
        raise ValueError(f"image folder source {source!r} needs an image size (size=...)")
    return load_image_folder(split_folder(source, split), size=size, channels=channels, strict=strict,
                             background=background, classes=classes, reference=reference)


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


def split_folder(url: str, split: str) -> str:
    """`<url>/<split>`; `url` itself when `split` is "." (a folder that is one split, e.g. unlabeled photos for
    pre-training). A missing split folder is an error: a folder is never silently used as two splits."""
    if split in (".", ""):
        return url
    fs, root = filesystem(url)
    check_reachable(fs, root, url)
    candidate = root.rstrip("/") + "/" + split
    if fs.isdir(candidate):
        return url.rstrip("/") + "/" + split
    if not fs.isdir(root):
        raise FileNotFoundError(f"image folder {url!r} does not exist")
    subs = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False) if fs.isdir(p))
    raise FileNotFoundError(f"image folder {url!r} has no {split!r} sub-folder (it has: {', '.join(subs) or 'none'}); "
                            f"name the splits it has (data.train_split, data.eval_split, data.eval_train_split), or "
                            f"'.' for a folder that is itself one split")
