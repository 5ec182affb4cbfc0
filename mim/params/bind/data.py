"""Data params -> the augmentation, the image splits, and the prepared data set.

Prepared splits: `train` (pre-training: `source` / `train_split`, may be unlabeled), `test` (evaluation:
`eval_source` / `eval_split`) and `eval_train` (the labeled split evaluation fits on: `eval_source` /
`eval_train_split`; an alias of `train` when both name the same images).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from mim.data import BatchAugment, ImageTensors, load_dataset
from mim.data.folder import list_image_folder
from mim.data.prepared import alias_entry, clear_manifest, read_manifest, save_manifest, save_split, shard_entry
from mim.data.shards import PNG_SOURCES, shard_source
from mim.data.sources import split_folder
from mim.io import OutputWriteError, pid_alive
from mim.params.models import DataParams
from mim.rng import generator_for

log = logging.getLogger("mim.prepare")
PREPARED_SPLITS = ("train", "eval_train", "test")
# the data params that change what `mim prepare` stores (dvc.yaml's prepare stage lists the same ones)
PREPARED_BY = ("source", "train_split", "eval_split", "eval_source", "eval_train_split", "image_size", "subset", "seed",
               "strict", "background", "storage", "array_max_gb", "max_side", "shards_url", "to_rgb")


def augment(data: DataParams, image_size: int | None = None) -> BatchAugment:
    """The training augmentation `data` describes, to `image_size` (default the data's); `.eval()` of it is the
    evaluation transform."""
    a = data.augment
    return BatchAugment(out_size=image_size or data.image_size, scale=a.scale, ratio=a.ratio, hflip_prob=a.hflip,
                        mean=data.mean, std=data.std, to_rgb=data.to_rgb)


def split_source(data: DataParams, split: str) -> tuple[str, str]:
    """(source, split name in it) behind prepared split `split`."""
    if split == "train":
        return data.source, data.train_split
    return data.eval_source or data.source, data.eval_train_split if split == "eval_train" else data.eval_split


def is_alias(data: DataParams, split: str) -> bool:
    """True when prepared `eval_train` names exactly the pre-training images (stored once)."""
    return split == "eval_train" and split_source(data, split) == split_source(data, "train")


def describe(data: DataParams, split: str) -> str:
    """How messages name prepared split `split`: "split 'test' of /data/photos"."""
    source, name = split_source(data, split)
    return f"split {name!r} of {source}"


def reference_split(data: DataParams, split: str) -> str | None:
    """The split whose class list labels `split` by name: `test` follows `eval_train`, which follows the
    pre-training split when both are splits of one source (so label i is one class everywhere)."""
    if split == "test":
        return "eval_train"
    if split == "eval_train" and not is_alias(data, split) and split_source(data, split)[0] == data.source:
        return "train"
    return None


def reference_name(data: DataParams, split: str) -> str:
    """How errors name `split`'s reference split: "the split 'train' of /data/photos"."""
    ref = reference_split(data, split)
    return f"the {describe(data, ref)}" if ref else "the training split"


def load_split(data: DataParams, split: str, classes: list[str] | None = None) -> ImageTensors:
    """Prepared split `split` ("train", "eval_train" or "test") of the data, decoded at `data.image_size`;
    `classes`: the class list of its reference split (`reference_split`), which its labels index by name."""
    source, name = split_source(data, split)
    return load_dataset(source, name, size=data.image_size, strict=data.strict, seed=data.seed,
                        background=data.background, classes=classes or None, reference=reference_name(data, split))


def train_images(data: DataParams) -> ImageTensors:
    """The pre-training split, cut to the seeded `subset` when one is asked for (what `mim prepare` stores)."""
    train = load_split(data, "train")
    return train.subset(data.subset, generator_for(data.seed, "subset")) if data.subset is not None else train


def storage_form(data: DataParams, split: str) -> str:
    """"array" or "shards" for `split`: as asked, or (auto) an array when it would take at most `array_max_gb`.
    In-memory sources (Fashion-MNIST, synthetic) are arrays under auto."""
    if data.storage != "auto":
        return data.storage
    source, name = split_source(data, split)
    if source.partition(":")[0] in PNG_SOURCES:
        return "array"
    _, paths, _, _ = list_image_folder(split_folder(source, name))
    channels = 3 if data.to_rgb else 1
    return "array" if len(paths) * channels * data.image_size**2 <= data.array_max_gb * 2**30 else "shards"


def write_split(data: DataParams, split: str, root: str, form: str, classes: list[str] | None = None
                ) -> tuple[dict, np.ndarray | None]:
    """Prepare `split` in `form` under `root`; returns its manifest entry and, for shards, the labels to store.
    `classes`: its reference split's class list (`load_split`)."""
    if form == "array":
        ds = train_images(data) if split == "train" else load_split(data, split, classes)
        return save_split(root, split, ds), None
    if split == "train" and data.subset is not None:
        raise ValueError("data.subset: not supported with storage: shards (prepare a smaller folder instead)")
    source, name = split_source(data, split)
    url = f"{(data.shards_url or root).rstrip('/')}/{split}"
    channels = 3 if data.to_rgb else 1
    labels, classes, skipped, digest = shard_source(
        source, name, url, max_side=data.max_side, mode="RGB" if channels == 3 else "L", background=data.background,
        strict=data.strict, size=data.image_size, seed=data.seed, classes=classes or None,
        reference=reference_name(data, split))
    return shard_entry(url, labels, classes, source, skipped, digest, data.image_size, channels, data.max_side,
                       data.background), labels


def labeled_classes(entries: dict[str, dict], split: str | None) -> list[str] | None:
    """The class list of prepared `split`'s entry (following an alias) when it is labeled, else None."""
    entry = entries.get(split or "", {})
    entry = entries.get(entry.get("alias"), entry)
    return entry["classes"] if entry.get("labeled") else None


def prepare(data: DataParams, root: str, splits: tuple[str, ...] = PREPARED_SPLITS) -> dict:
    """Write `splits` of `data` under `root`, each in its storage form, and the manifest (which also records the
    data params, so a stage can tell stale prepared data and a one-off run can reuse what it prepared).

    A local `root` is written as a temporary sibling folder and swapped in whole at the end, so a refused or failed
    prepare (classes that differ, a full disk) leaves the previous prepared data as it was. At a URL the manifest
    is removed first instead (the folder then does not pass as prepared until the new manifest is written)."""
    if "://" in root:
        clear_manifest(root)
        return _write_prepared(data, root, splits)
    final = Path(root)
    _remove_leftovers(final)
    work = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        manifest = _write_prepared(data, str(work), splits, moves_to=str(final))
    except OutputWriteError as err:
        shutil.rmtree(work, ignore_errors=True)
        where = str(err.filename).replace(str(work), str(final))
        raise OutputWriteError(err.errno, str(err).replace(str(work), str(final)), where) from err
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _swap_in(work, final)
    return manifest


def _write_prepared(data: DataParams, root: str, splits: tuple[str, ...], moves_to: str | None = None) -> dict:
    """The splits and manifest under `root`; shard URLs inside `root` are recorded under `moves_to`, where the
    folder will be."""
    entries, labels = {}, {}
    for split in splits:
        if is_alias(data, split):
            entries[split] = alias_entry("train")
            continue
        form = storage_form(data, split)
        log.info("preparing %s (%s of %s) as %s ...", split, split_source(data, split)[1],
                 split_source(data, split)[0], form)
        classes = labeled_classes(entries, reference_split(data, split))
        entries[split], stored = write_split(data, split, root, form, classes)
        if stored is not None:
            labels[split] = stored
    for entry in entries.values():
        if moves_to and entry.get("url", "").startswith(f"{root}/"):
            entry["url"] = moves_to + entry["url"][len(root):]
    return save_manifest(root, entries, labels, extra={"source": data.source, "data": data.model_dump(mode="json")})


def _remove_leftovers(final: Path) -> None:
    """Remove the temporary folders of prepares killed before their swap (their PID, in the name, is gone)."""
    for folder in final.parent.glob(f"{final.name}.tmp-*-*"):
        pid = folder.name.split(".tmp-")[-1].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(work: Path, final: Path) -> None:
    """Put the complete folder `work` at `final`; the previous one is removed only after."""
    old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(work, final)
    shutil.rmtree(old, ignore_errors=True)


def check_prepared(data: DataParams, root: str | Path, data_file: str | Path = "params/data.yaml") -> None:
    """Refuse prepared data made from other data params than `data` (what `data_file` says now): a stage run by
    itself after an edit of data.yaml would train or evaluate on the old images while recording the new source.
    Under `dvc repro` prepare re-runs first, so this never triggers there."""
    recorded = read_manifest(root).get("data") or {}
    now = data.model_dump(mode="json")
    changed = [f"{k}: {recorded[k]!r} -> {now[k]!r}" for k in PREPARED_BY if k in recorded and recorded[k] != now[k]]
    if changed:
        raise ValueError(f"{root} was prepared from other data params than {data_file} now holds ({'; '.join(changed)})"
                         "; run `dvc repro prepare` (or `mim prepare`) first")
