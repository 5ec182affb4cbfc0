"""Data params -> the augmentation and the image splits."""

from __future__ import annotations

from mim.data import BatchAugment, ImageTensors, load_dataset
from mim.params.models import DataParams
from mim.rng import generator_for


def augment(data: DataParams, image_size: int | None = None) -> BatchAugment:
    """The training augmentation `data` describes, to `image_size` (default the data's); `.eval()` of it is the
    evaluation transform."""
    a = data.augment
    return BatchAugment(out_size=image_size or data.image_size, scale=a.scale, ratio=a.ratio, hflip_prob=a.hflip,
                        mean=data.mean, std=data.std, to_rgb=data.to_rgb)


def load_split(data: DataParams, split: str) -> ImageTensors:
    """One split of `data.source`, decoded at `data.image_size`."""
    return load_dataset(data.source, split, size=data.image_size, strict=data.strict, seed=data.seed)


def train_images(data: DataParams) -> ImageTensors:
    """The training split, cut to the seeded `subset` when one is asked for (what `mim prepare` stores)."""
    train = load_split(data, data.train_split)
    return train.subset(data.subset, generator_for(data.seed, "subset")) if data.subset is not None else train
