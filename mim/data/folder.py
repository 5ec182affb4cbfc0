"""Image folders on any fsspec filesystem, decoded into one uint8 tensor.

Layout: `root/<class>/**/*.png` gives a labeled data set (classes sorted by folder name, or those of a reference
split: label i means the same class in every split); images directly in `root` with no class folders give an
unlabeled one (labels -1).
"""

from __future__ import annotations

import os
import posixpath
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import fsspec
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mim.data.dataset import UNLABELED, ImageTensors
from mim.data.decode import decode_bytes
from mim.data.errors import ClassMismatchError, CorruptImageError, CorruptImageWarning, EmptyDatasetError
from mim.io import check_reachable, filesystem
from mim.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_MODES = {1: "L", 3: "RGB"}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_SHOWN_CORRUPT = 5


def load_image_folder(url: str, *, size: int, channels: int = 3, strict: bool = False,
                      background: tuple[int, int, int] = (255, 255, 255), classes: list[str] | None = None,
                      reference: str = "the training split") -> ImageTensors:
    """Decode every image under `url` to [N, channels, size, size] uint8 (shorter side resized, then center crop),
    upright (EXIF), transparency composited onto `background`, 16-bit and CMYK images converted.

    Unreadable files are skipped, reported in one `CorruptImageWarning` and named in the result's `skipped`; with
    `strict=True` the first one raises `CorruptImageError` instead. `classes` (of `reference`) fixes the labels'
    class list (see `list_image_folder`).
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    fs, paths, labels, classes = list_image_folder(url, classes, reference)

    pixels = np.empty((len(paths), size, size, channels), dtype=np.uint8)  # [N, H, W, C] uint8
    ok = np.ones(len(paths), dtype=bool)
    failures: list[tuple[str, str]] = []
    decode = partial(_read_and_decode, fs, size=size, mode=_MODES[channels], background=tuple(background))
    pool = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4))
    try:
        with Progress(len(paths), f"decode {url}", "images", logger="mim.data") as progress:
            for i, (path, result) in enumerate(zip(paths, pool.map(decode, paths), strict=True)):
                if isinstance(result, str):
                    if strict:
                        raise CorruptImageError(f"cannot decode image {_display(fs, path)}: {result}")
                    ok[i] = False
                    failures.append((path, result))
                else:
                    pixels[i] = result
                progress.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    if failures:
        shown = ", ".join(_display(fs, p) for p, _ in failures[:_SHOWN_CORRUPT])
        more = f" and {len(failures) - _SHOWN_CORRUPT} more" if len(failures) > _SHOWN_CORRUPT else ""
        warnings.warn(
            f"skipped {len(failures)} of {len(paths)} unreadable images under {url!r}: {shown}{more} "
            f"(first reason: {failures[0][1]})",
            CorruptImageWarning,
            stacklevel=2,
        )
    if not ok.any():
        raise EmptyDatasetError(f"none of the {len(paths)} images under {url!r} could be decoded")

    keep = torch.from_numpy(ok)
    return ImageTensors(
        images=torch.from_numpy(pixels)[keep].permute(0, 3, 1, 2).contiguous(),  # [N, C, H, W] uint8
        labels=torch.tensor(labels, dtype=torch.int64)[keep],  # [N] int64
        classes=classes,
        source=url,
        skipped=[_display(fs, p) for p, _ in failures],
    )


def list_image_folder(url: str, classes: list[str] | None = None, reference: str = "the training split"
                      ) -> tuple[fsspec.AbstractFileSystem, list[str], list[int], list[str]]:
    """(filesystem, sorted image paths, their labels, class names) of the image folder at `url`; clear errors for a
    missing folder, a file, or a folder without images.

    `classes`: the class list of a reference split (`reference` names it in errors). Labels then index it, by
    name: a folder missing some of its classes keeps the others' labels; a class folder it lacks is a
    `ClassMismatchError`."""
    fs, root = filesystem(url)
    root = root.rstrip("/") or "/"
    check_reachable(fs, root, url)
    if not fs.exists(root):
        raise FileNotFoundError(f"image folder {url!r} does not exist")
    if not fs.isdir(root):
        raise NotADirectoryError(f"image folder {url!r} is a file, not a folder")
    paths, labels, own = _list_images(fs, root, url)
    if not paths:
        raise EmptyDatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {url!r}")
    if classes is None or not own or own == list(classes):
        return fs, paths, labels, own
    unknown = sorted(set(own) - set(classes))
    if unknown:
        raise ClassMismatchError(f"image folder {url!r} has class folder(s) {', '.join(unknown)} that "
                                 f"{reference} lacks (its classes: {', '.join(classes) or 'none'}); a label must "
                                 "mean the same class in every split: remove or rename them, or add them there")
    index = {name: i for i, name in enumerate(classes)}
    return fs, paths, [index[own[label]] for label in labels], list(classes)


def display_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """`path` as the user would write it: plain for local files, a full URL otherwise."""
    return _display(fs, path)


def _list_images(fs: fsspec.AbstractFileSystem, root: str, url: str) -> tuple[list[str], list[int], list[str]]:
    """Sorted image paths, their labels and the class names, from one recursive listing of `root`."""
    prefix = root if root.endswith("/") else root + "/"
    by_class: dict[str, list[str]] = {}
    loose: list[str] = []
    for path in fs.find(root, withdirs=False):
        rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.relpath(path, root)
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts) or not _is_image(parts[-1]):
            continue
        if len(parts) == 1:
            loose.append(path)
        else:
            by_class.setdefault(parts[0], []).append(path)

    if not by_class:
        loose.sort()
        return loose, [UNLABELED] * len(loose), []
    if loose:
        warnings.warn(
            f"ignoring {len(loose)} images directly under {url!r} because it also has class folders "
            f"({', '.join(sorted(by_class))})",
            UserWarning,
            stacklevel=3,
        )
    classes = sorted(by_class)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        members = sorted(by_class[name])
        paths.extend(members)
        labels.extend([label] * len(members))
    return paths, labels, classes


def _display(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """`path` as the user would write it: plain for local files, a full URL otherwise."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return path if "file" in protocols else fs.unstrip_protocol(path)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _read_and_decode(fs: fsspec.AbstractFileSystem, path: str, size: int, mode: str,
                     background: tuple[int, int, int]) -> np.ndarray | str:
    """[size, size, C] uint8 pixels of one file, or the reason it could not be read (a string)."""
    try:
        return resize_center_crop(decode_bytes(fs.cat_file(path), mode, background, draft=size), size)
    except UnidentifiedImageError:
        return "not a recognized image format (unknown, empty or badly truncated file)"
    except _DECODE_ERRORS as e:
        return f"{type(e).__name__}: {e}"


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (bilinear, antialiased), center-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    img = img.crop((left, top, left + size, top + size))
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels  # [size, size, C] uint8
