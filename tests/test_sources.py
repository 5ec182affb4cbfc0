"""Pre-training and evaluation data from separate sources: unlabeled photos for pre-training, a labeled set with
its own split names for evaluation; class lists aligned by name; missing splits are errors."""

from __future__ import annotations

import pytest

from mim.data.prepared import load_prepared, open_prepared, read_manifest
from mim.params import DataParams
from mim.params.bind.data import prepare
from tests.test_shards import jpeg_folder

DIMS = [(40, 30), (30, 44), (64, 64)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    photos = root / "photos"
    jpeg_folder(photos, {"x": DIMS * 2}, seed=5)
    for f in (photos / "x").iterdir():  # unlabeled: images directly in the folder
        f.rename(photos / f.name)
    (photos / "x").rmdir()
    labeled = root / "labeled"
    jpeg_folder(labeled / "train", {"cat": DIMS, "dog": DIMS}, seed=6)
    jpeg_folder(labeled / "val", {"cat": DIMS[:2], "dog": DIMS[:1]}, seed=7)
    return photos, labeled


def test_pretrain_on_unlabeled_photos_evaluate_on_a_labeled_set(sources, tmp_path):
    photos, labeled = sources
    data = DataParams(source=str(photos), train_split=".", eval_source=str(labeled), eval_split="val", image_size=16)
    splits = prepare(data, str(tmp_path))["splits"]
    assert splits["train"]["count"] == 6 and not splits["train"]["labeled"]
    assert splits["eval_train"]["count"] == 6 and splits["eval_train"]["classes"] == ["cat", "dog"]
    assert splits["test"]["count"] == 3 and splits["test"]["source"].endswith("labeled/val")
    assert load_prepared(tmp_path, "eval_train").labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_prepared(tmp_path, "test").labels.tolist() == [0, 0, 1]


def test_one_source_stores_the_training_images_once(sources, tmp_path):
    _, labeled = sources
    prepare(DataParams(source=str(labeled), eval_split="val", image_size=16), str(tmp_path))
    assert read_manifest(tmp_path)["splits"]["eval_train"] == {"alias": "train"}
    assert len(open_prepared(tmp_path, "eval_train")) == 6 and not (tmp_path / "eval_train_images.npy").exists()


def test_an_evaluation_class_the_training_split_lacks_is_an_error(sources, tmp_path):
    """Labels are aligned by class name (tests/faults/test_inputs.py checks the alignment): a class only the
    scored split has cannot be aligned."""
    other = tmp_path / "other"
    jpeg_folder(other / "train", {"cat": DIMS, "dog": DIMS}, seed=1)
    jpeg_folder(other / "val", {"cat": DIMS, "fox": DIMS}, seed=2)
    with pytest.raises(ValueError, match=r"val' has class folder\(s\) fox that the split 'train' of .* lacks"):
        prepare(DataParams(source=str(other), eval_split="val", image_size=16), str(tmp_path / "p"))


def test_a_missing_split_folder_is_an_error_naming_what_exists(sources, tmp_path):
    _, labeled = sources
    with pytest.raises(FileNotFoundError, match=r"has no 'test' sub-folder \(it has: train, val\)"):
        prepare(DataParams(source=str(labeled), image_size=16), str(tmp_path))
