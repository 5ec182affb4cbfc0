"""Tests for mim.data: sources, in-memory data sets and loading (augmentation and step batching: test_augment.py)."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from mim.data import (
    DEFAULT_FASHION_MNIST,
    CorruptImageError,
    CorruptImageWarning,
    EmptyDatasetError,
    ImageTensors,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    make_synthetic,
    read_idx,
)
from mim.rng import generator_for

# ---------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file (gzipped when the name ends in .gz)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path, layout: dict[str, bytes]) -> Path:
    for rel, data in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def jpeg_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
TWO_CLASSES = {  # two classes, upper-case extension, JPEG, a nested file and a non-image to ignore
    "cat/a.png": png_bytes(RED),
    "cat/b.PNG": png_bytes(RED, (16, 30)),
    "dog/c.jpg": jpeg_bytes(BLUE),
    "dog/nested/d.png": png_bytes(BLUE),
    "dog/notes.txt": b"not an image",
}


@pytest.fixture
def memory_root():
    """A unique memory:// folder, removed afterwards (the memory filesystem is process-global)."""
    url = f"memory://mim-test-{uuid.uuid4().hex}"
    fs, path = fsspec.core.url_to_fs(url)
    yield url, fs, path
    if fs.exists(path):
        fs.rm(path, recursive=True)


# ---------------------------------------------------------------- ImageTensors


def tiny_dataset(n: int = 10) -> ImageTensors:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageTensors(images=images, labels=torch.arange(n) % 2, classes=["a", "b"], source="tiny")


def test_image_tensors_validates_and_names_source() -> None:
    with pytest.raises(EmptyDatasetError, match="my-source"):
        ImageTensors(torch.zeros(0, 1, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), [], "my-source")
    with pytest.raises(TypeError, match="uint8"):
        ImageTensors(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"], "x")
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageTensors(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ["a"], "x")
    with pytest.raises(ValueError, match="labels span"):
        ImageTensors(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 5]), ["a"], "x")


def test_image_tensors_subset_to_digest() -> None:
    data = tiny_dataset(10)
    assert len(data) == 10 and data.is_labeled
    sub = data.subset(4, generator_for(0, "subset"))
    again = data.subset(4, generator_for(0, "subset"))
    assert len(sub) == 4
    values = sub.images[:, 0, 0, 0].long()
    assert len(set(values.tolist())) == 4  # without replacement
    assert torch.equal(sub.labels, values % 2)  # labels follow their images
    assert torch.equal(sub.images, again.images) and sub.digest() == again.digest()
    assert sub.digest() != data.digest() and len(data.digest()) == 16
    assert data.subset(10, generator_for(0)) is data and data.subset(99, generator_for(0)) is data
    assert data.to("cpu").images.device.type == "cpu"
    unlabeled = ImageTensors(data.images, torch.full((10,), -1), [], "u")
    assert not unlabeled.is_labeled


# ---------------------------------------------------------------- IDX / Fashion-MNIST


@pytest.mark.parametrize("name", ["arr-idx3-ubyte", "arr-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    back = read_idx(write_idx(tmp_path / name, images))
    assert back.dtype == np.uint8 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, images)
    ints = rng.integers(-1000, 1000, size=(4, 6)).astype(np.int32)
    back = read_idx(write_idx(tmp_path / ("ints-" + name), ints))
    assert back.dtype == np.int32 and back.dtype.isnative
    np.testing.assert_array_equal(back, ints)


def test_read_idx_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-magic-idx1-ubyte"
    bad.write_bytes(bytes([0x12, 0x34, 0x08, 0x01]) + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="bad-magic-idx1-ubyte.*magic"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 0x08, 0x01]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="short-idx1-ubyte.*need 5 data bytes, found 3"):
        read_idx(short)


def test_fashion_mnist_from_uncompressed_files(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 2], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    data = load_fashion_mnist(tmp_path, split="test")
    assert data.images.shape == (6, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == labels.tolist() and data.labels.dtype == torch.int64
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, split="train")
    with pytest.raises(ValueError, match="'val'"):
        load_fashion_mnist(tmp_path, split="val")  # type: ignore[arg-type]


def test_fashion_mnist_missing_root_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(missing)
    message = str(err.value)
    assert str(missing) in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "data.source" in message


@pytest.mark.skipif(not Path(DEFAULT_FASHION_MNIST).is_dir(), reason=f"{DEFAULT_FASHION_MNIST} not installed")
def test_real_fashion_mnist() -> None:
    train = load_fashion_mnist(split="train")
    test = load_fashion_mnist(split="test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    for data in (train, test):
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert data.labels.min() == 0 and data.labels.max() == 9
        assert torch.equal(data.labels.bincount(), torch.full((10,), len(data) // 10))  # balanced classes
        assert len(data.classes) == 10 and data.is_labeled
    assert load_dataset("fashion-mnist", "test").digest() == test.digest()


# ---------------------------------------------------------------- image folders


def check_two_classes(data: ImageTensors, url: str) -> None:
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1]  # cat/a, cat/b, dog/c, dog/nested/d
    assert data.images.shape == (4, 3, 8, 8) and data.images.dtype == torch.uint8
    mean_rgb = data.images.float().mean(dim=(2, 3))  # [4, 3]
    expected = torch.tensor([RED, RED, BLUE, BLUE], dtype=torch.float32)
    assert torch.allclose(mean_rgb, expected, atol=4)  # solid colours survive resize + crop (JPEG within 4)
    assert data.source == url


def test_image_folder_local(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", TWO_CLASSES)
    check_two_classes(load_image_folder(str(root), size=8), str(root))
    url = f"file://{root}"
    check_two_classes(load_image_folder(url, size=8), url)
    gray = load_image_folder(str(root), size=5, channels=1)
    assert gray.images.shape == (4, 1, 5, 5)


def test_image_folder_memory(memory_root) -> None:
    url, fs, path = memory_root
    for rel, data in TWO_CLASSES.items():
        fs.pipe_file(f"{path}/{rel}", data)
    check_two_classes(load_image_folder(url, size=8), url)


def test_image_folder_resize_then_center_crop(tmp_path: Path) -> None:
    # 30 x 10 image: left third red, middle green, right third blue; after shorter side -> 6 the
    # center crop keeps only the middle (green) part.
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, :10, 0] = pixels[:, 10:20, 1] = pixels[:, 20:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    data = load_image_folder(str(tmp_path), size=6)
    assert data.images.shape == (1, 3, 6, 6)
    center = data.images[0, :, :, 1:5].float().mean(dim=(1, 2))
    assert center[1] > 200 and center[0] < 60 and center[2] < 60


def test_image_folder_unlabeled(memory_root) -> None:
    url, fs, path = memory_root
    for i, color in enumerate([RED, GREEN, BLUE]):
        fs.pipe_file(f"{path}/img{i}.png", png_bytes(color))
    data = load_image_folder(url, size=4)
    assert data.labels.tolist() == [-1, -1, -1] and data.classes == [] and not data.is_labeled
    assert data.images[:, :, 0, 0].tolist() == [list(RED), list(GREEN), list(BLUE)]  # sorted path order


def test_image_folder_corrupt_files(tmp_path: Path) -> None:
    layout = {**TWO_CLASSES, "dog/broken.png": b"\x89PNG\r\n\x1a\n garbage", "cat/empty.jpg": b""}
    root = make_folder(tmp_path / "imgs", layout)
    with pytest.warns(CorruptImageWarning, match=r"skipped 2 of 6") as record:
        data = load_image_folder(str(root), size=8)
    assert len([w for w in record if issubclass(w.category, CorruptImageWarning)]) == 1  # one warning in total
    message = str(record[0].message)
    assert "broken.png" in message and "empty.jpg" in message
    check_two_classes(data, str(root))

    # strict: the first bad file in sorted order raises, naming it and the reason.
    with pytest.raises(CorruptImageError, match=r"cat/empty\.jpg: not a recognized image format"):
        load_image_folder(str(root), size=8, strict=True)


def test_image_folder_empty_and_missing(tmp_path: Path, memory_root) -> None:
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "readme.txt").write_text("no images here")
    with pytest.raises(EmptyDatasetError, match=str(empty)):
        load_image_folder(str(empty), size=8)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_image_folder(str(missing), size=8)
    url, fs, path = memory_root
    fs.pipe_file(f"{path}/bad.png", b"not a png")
    with pytest.warns(CorruptImageWarning), pytest.raises(EmptyDatasetError, match=url):
        load_image_folder(url, size=8)


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_learnable() -> None:
    a = make_synthetic(64, size=16, channels=3, num_classes=4, seed=3)
    b = make_synthetic(64, size=16, channels=3, num_classes=4, seed=3)
    c = make_synthetic(64, size=16, channels=3, num_classes=4, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (64, 3, 16, 16) and a.images.dtype == torch.uint8
    assert a.classes == ["class0", "class1", "class2", "class3"] and a.source == "synthetic"
    assert a.labels.bincount().tolist() == [16, 16, 16, 16]

    # Classes differ in stripe angle/frequency: nearest class centroid of the Fourier magnitude
    # generalizes from one seed to another.
    def features(d: ImageTensors) -> torch.Tensor:
        x = d.images.float().mean(1)
        return torch.fft.fft2(x - x.mean(dim=(1, 2), keepdim=True)).abs().flatten(1)

    train = make_synthetic(200, size=16, num_classes=5, seed=0)
    test = make_synthetic(200, size=16, num_classes=5, seed=1)
    ft, fe = features(train), features(test)
    centroids = torch.stack([ft[train.labels == k].mean(0) for k in range(5)])
    accuracy = (torch.cdist(fe, centroids).argmin(1) == test.labels).float().mean()
    assert accuracy > 0.9


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_sources(tmp_path: Path) -> None:
    train = load_dataset("synthetic:40", "train", size=16, seed=3)
    test = load_dataset("synthetic:40", "test", size=16, seed=3)
    assert len(train) == 40 and train.images.shape == (40, 3, 16, 16)
    assert not torch.equal(train.images, test.images)
    assert torch.equal(train.images, load_dataset("synthetic:40", "train", size=16, seed=3).images)
    assert len(load_dataset("synthetic", synthetic_size=24, size=8)) == 24

    make_folder(tmp_path / "split" / "train", {"a/x.png": png_bytes(RED), "b/y.png": png_bytes(BLUE)})
    make_folder(tmp_path / "split" / "test", {"a/z.png": png_bytes(RED)})
    assert load_dataset(str(tmp_path / "split"), "test", size=4).labels.tolist() == [0]
    assert load_dataset(str(tmp_path / "split"), "train", size=4).classes == ["a", "b"]
    flat = make_folder(tmp_path / "flat", {"a/x.png": png_bytes(RED)})
    with pytest.raises(FileNotFoundError, match=r"has no 'test' sub-folder \(it has: a\)"):
        load_dataset(str(flat), "test", size=4)  # never silently the same images for two splits
    assert len(load_dataset(str(flat), ".", size=4)) == 1  # '.': the folder is itself the split
    assert load_dataset(str(tmp_path / "split"), "train", size=4).classes == ["a", "b"]

    (tmp_path / "fm").mkdir()
    write_idx(tmp_path / "fm" / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3], np.uint8))
    assert load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", "test").labels.tolist() == [1, 2, 3]

    with pytest.raises(ValueError, match="size"):
        load_dataset(str(flat))
    with pytest.raises(ValueError, match="'validation' of synthetic"):
        load_dataset("synthetic", "validation")
    with pytest.raises(ValueError, match="'abc'"):
        load_dataset("synthetic:abc")


def test_library_does_not_import_pipeline_tools() -> None:
    code = "import sys, mim.data; print(sorted({'prefect', 'dvc', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_warnings_for_clean_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"a/x.png": png_bytes(RED), "b/y.webp": b""})
    Image.new("RGB", (9, 9), GREEN).save(root / "b" / "y.webp", format="WEBP", lossless=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_folder(str(root), size=9)
    assert data.labels.tolist() == [0, 1]
    assert data.images[1, :, 4, 4].tolist() == list(GREEN)
