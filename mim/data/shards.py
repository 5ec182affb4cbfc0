"""Streaming shards of encoded images, for corpora that do not fit in memory.

`mim prepare` (data `storage: shards`) writes each split as litdata chunks: one item per image with its encoded
bytes (the original file, or re-encoded once when its shorter side exceeds `max_side`), its label and its index
in the source listing. Readers get random access to any item without loading a whole chunk, so every rank and
DataLoader worker reads only the images of its own micro-batches, and the page cache is shared between them.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np
import torch
from PIL import Image

from mim.data.dataset import ImageTensors, subset_indices
from mim.data.decode import decode_bytes
from mim.data.folder import resize_center_crop
from mim.io import OutputWriteError, filesystem
from mim.progress import Progress

CHUNK_BYTES = "64MB"
PNG_SOURCES = ("fashion-mnist", "synthetic")  # in-memory sources: their images are stored losslessly


def cap_encoded(data: bytes, max_side: int | None, mode: str, background: tuple[int, int, int]) -> bytes:
    """`data` as stored: the original bytes when the image's shorter side is <= `max_side` (or no cap), else the
    image decoded, upright, resized so its shorter side is `max_side`, and re-encoded as JPEG (quality 95).
    Raises what PIL raises for a file it cannot read."""
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # a corrupt file fails here, before it is stored
    if max_side is None:
        return data
    img = decode_bytes(data, mode, background, draft=max_side)
    w, h = img.size
    if min(w, h) <= max_side:
        return data
    scale = max_side / min(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95)
    return out.getvalue()


def png_bytes(pixels: torch.Tensor) -> bytes:
    """[C, H, W] uint8 -> PNG bytes (grey or RGB)."""
    array = pixels.permute(1, 2, 0).numpy()
    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def write_shards(url: str, items: Iterable[tuple[int, int, bytes]], chunk_bytes: str = CHUNK_BYTES) -> np.ndarray:
    """Write (index, label, encoded bytes) items, in order, as litdata chunks at `url` (a local folder or any
    fsspec URL: written locally, then uploaded). Returns the labels in stored order [N] int64."""
    from litdata.streaming.writer import BinaryWriter

    fs, path = filesystem(url)
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    target = path if local else tempfile.mkdtemp(prefix="mim-shards-")
    if local and os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(target, exist_ok=True)
    labels = []
    try:
        writer = BinaryWriter(target, chunk_bytes=chunk_bytes)
        for position, (index, label, data) in enumerate(items):
            # stored as a uint8 array, not `bytes`: litdata then keeps items on its per-item path, where a random
            # read costs 0.02 ms; `bytes` rows get an Arrow footer that a random read re-parses (0.57 ms, measured)
            writer.add_item(position, {"index": index, "label": label, "image": np.frombuffer(data, dtype=np.uint8)})
            labels.append(label)
        writer.done()
        writer.merge()
        if not local:
            fs.put(target.rstrip("/") + "/", path, recursive=True)
    except OSError as err:  # a full disk: no half-written chunks are left to pass as a split
        shutil.rmtree(target, ignore_errors=True)
        raise OutputWriteError.of(url, err, kept=False) from err
    finally:
        if not local:
            shutil.rmtree(target, ignore_errors=True)
    return np.asarray(labels, dtype=np.int64)


class ShardSplit:
    """One split stored as shards: `len`, `labels` (stored order), and each image's bytes or pixels on demand.

    The litdata reader is opened lazily in each process (DataLoader workers included), so the object pickles
    cheaply and no file handle crosses a fork.
    """

    def __init__(self, url: str, labels: torch.Tensor, classes: list[str], source: str, mode: str,
                 background: tuple[int, int, int], digest: str, image_size: int) -> None:
        self.url, self.labels, self.classes, self.source = url, labels, classes, source
        self.mode, self.background, self._digest, self.image_size = mode, tuple(background), digest, image_size
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def is_labeled(self) -> bool:
        return bool((self.labels >= 0).all())

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def digest(self) -> str:
        """The digest of the stored bytes, recorded when the shards were written."""
        return self._digest

    def encoded(self, i: int) -> bytes:
        """The stored bytes of image `i` (stored order)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # one litdata reader per thread and process: it is not
            from litdata import StreamingDataset  # thread-safe, and a forked worker must not share its parent's

            local.reader, local.pid = StreamingDataset(self.url, batch_decode=0), os.getpid()
        return local.reader[int(i)]["image"].tobytes()

    def image(self, i: int, draft: int | None = None) -> Image.Image:
        """Image `i` decoded, upright, in the split's mode (`draft`: a JPEG may be decoded smaller, shorter
        side still >= draft)."""
        return decode_bytes(self.encoded(i), self.mode, self.background, draft=draft)

    def crop(self, i: int, box: tuple[float, float, float, float], size: int, flip: bool) -> np.ndarray:
        """[size, size, C] uint8: the normalized `box` (x0, y0, x1, y1 in [0, 1]) of image `i` resized to `size`
        (antialiased), mirrored when `flip`. JPEGs are decoded at the smallest scale that keeps the box sharp."""
        x0, y0, x1, y1 = box
        draft = int(np.ceil(size / max(min(x1 - x0, y1 - y0), 1e-3)))
        img = self.image(i, draft=draft)
        w, h = img.size
        out = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0 * w, y0 * h, x1 * w, y1 * h),
                         reducing_gap=None)
        pixels = np.asarray(out, dtype=np.uint8)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        return pixels[:, ::-1] if flip else pixels

    def center(self, i: int, size: int) -> np.ndarray:
        """[size, size, C] uint8: shorter side resized to `size`, center crop (the evaluation view, the same as
        the array form's)."""
        return resize_center_crop(self.image(i, draft=size), size)

    def tensors(self, size: int, indices: Iterable[int] | None = None, threads: int | None = None,
                progress: bool = False) -> ImageTensors:
        """Images `indices` (default all) as one [N, C, size, size] uint8 set at the evaluation view: for the
        stages that need pixels in memory (evaluation subsets, pictures, tokenizer samples). `progress`: show
        the decoding's progress (a whole split or subset, not a batch)."""
        chosen = list(range(len(self)) if indices is None else indices)
        with (ThreadPoolExecutor(max_workers=threads or min(32, (os.cpu_count() or 1) + 4)) as pool,
              Progress(len(chosen), f"decode {self.source}", "images", logger="mim.data",
                       enabled=None if progress else False) as shown):
            decoded = []
            for image in pool.map(lambda i: self.center(i, size), chosen):
                decoded.append(image)
                shown.update()
            pixels = np.stack(decoded)
        return ImageTensors(images=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                            labels=self.labels[chosen].clone(), classes=self.classes, source=self.source)

    def subset(self, n: int, generator: torch.Generator) -> ImageTensors:
        """`n` images drawn as `ImageTensors.subset` draws them (the same indices for the same generator), decoded at
        the evaluation view: evaluation reads only the images it uses."""
        if n >= len(self):
            return self.tensors(self.image_size, progress=True)
        return self.tensors(self.image_size, subset_indices(len(self), n, generator).tolist(), progress=True)

    @property
    def images(self) -> ShardImages:
        """The images as a lazily decoded [N, C, image_size, image_size] uint8 sequence: code that indexes an
        in-memory image tensor (`images[idx]`, `images[:k]`, `len`) reads only the images it asks for."""
        return ShardImages(self)

    def in_memory(self) -> ImageTensors:
        return self.tensors(self.image_size, progress=True)

    def __iter__(self) -> Iterator[bytes]:
        return (self.encoded(i) for i in range(len(self)))


class ShardImages:
    """`ShardSplit.images`: indexing decodes just those images at the evaluation view."""

    def __init__(self, split: ShardSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: torch.Tensor | slice | list[int]) -> torch.Tensor:
        chosen = range(len(self.split))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        return self.split.tensors(self.split.image_size, chosen).images


def shard_source(source: str, split: str, url: str, *, max_side: int | None, mode: str,
                 background: tuple[int, int, int], strict: bool, size: int, seed: int,
                 threads: int | None = None, classes: list[str] | None = None,
                 reference: str = "the training split") -> tuple[np.ndarray, list[str], list[str], str]:
    """Write split `split` of `source` as shards at `url`; returns (labels in stored order, class names, skipped
    files, digest of the stored bytes). An image folder's files are read and checked in parallel threads and
    stored as they are (or capped at `max_side`); in-memory sources (Fashion-MNIST, synthetic) as PNGs. `classes`
    (of the split `reference` names) aligns an image folder's labels by class name."""
    import hashlib

    from mim.data.errors import CorruptImageError, EmptyDatasetError
    from mim.data.folder import display_path, list_image_folder
    from mim.data.sources import load_dataset, split_folder

    digest = hashlib.sha256()
    skipped: list[str] = []
    if source.partition(":")[0] in PNG_SOURCES:
        ds = load_dataset(source, split, size=size, seed=seed)
        records: Iterable[tuple[int, int, bytes | str]] = ((i, int(ds.labels[i]), png_bytes(ds.images[i]))
                                                          for i in range(len(ds)))
        classes, names = ds.classes, [f"{source}:{split}:{i}" for i in range(len(ds))]
    else:
        fs, paths, labels, classes = list_image_folder(split_folder(source, split), classes, reference)
        names = [display_path(fs, p) for p in paths]

        def read(path: str) -> bytes | str:
            try:
                return cap_encoded(fs.cat_file(path), max_side, mode, background)
            except Exception as err:  # noqa: BLE001 - any decoder failure marks the file as unreadable
                return f"{type(err).__name__}: {err}"

        pool = ThreadPoolExecutor(max_workers=threads or min(32, (os.cpu_count() or 1) + 4))
        records = ((i, label, data) for i, (label, data) in enumerate(zip(labels, pool.map(read, paths),
                                                                           strict=True)))

    def kept() -> Iterator[tuple[int, int, bytes]]:
        with Progress(len(names), f"shards {split} of {source}", "images", logger="mim.data") as progress:
            for index, label, data in records:
                progress.update()
                if isinstance(data, str):
                    if strict:
                        raise CorruptImageError(f"cannot decode image {names[index]}: {data}")
                    skipped.append(names[index])
                    continue
                digest.update(data)
                yield index, label, data

    stored = write_shards(url, kept())
    if len(stored) == 0:
        raise EmptyDatasetError(f"none of the {len(names)} images of {source} ({split}) could be decoded")
    return stored, classes, skipped, digest.hexdigest()[:16]
