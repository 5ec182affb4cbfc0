"""k-NN and linear probe of a frozen encoder on a labelled train/test pair."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch

from mim.data import BatchAugment, ImageTensors
from mim.data.dataset import balanced_subset
from mim.data.shards import ShardSplit
from mim.engine.runtime import resolve_device
from mim.evaluation.features import extract_features, pixel_features
from mim.evaluation.knn import knn_accuracy
from mim.evaluation.linear import linear_probe
from mim.models.encoder import Encoder
from mim.rng import generator_for


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """The frozen-feature protocol: pooled features (`pool`), k-NN (k, temperature) and a linear probe."""

    pool: Literal["cls", "mean"]
    batch_size: int
    device: str
    seed: int
    knn_k: int
    knn_temperature: float
    linear_epochs: int
    linear_batch_size: int
    linear_lr: float
    linear_weight_decay: float
    linear_optimizer: Literal["adamw", "sgd", "lars"]
    label_fractions: tuple[float, ...] = (1.0,)  # the linear probe also fits on these class-balanced fractions
    device_param: str = "eval.device"  # the param `device` came from, named when it cannot be used


def eval_subsets(train: ImageTensors | ShardSplit, test: ImageTensors | ShardSplit, train_subset: int | None,
                 test_subset: int | None, seed: int) -> tuple[ImageTensors, ImageTensors]:
    """Check both splits are labelled and cut the seeded subsets asked for (None = the whole split), in memory
    (a shard split decodes only the images drawn)."""
    out = []
    for split, ds, n in (("train", train, train_subset), ("test", test, test_subset)):
        if not ds.is_labeled:
            raise ValueError(f"{ds.source} ({split}): evaluation needs class labels (class sub-folders)")
        out.append((ds.subset(n, generator_for(seed, "eval", split)) if n else ds).in_memory())
    return out[0], out[1]


def fraction_key(protocol: str, fraction: float) -> str:
    """The metric name of `protocol`'s top-1 (percent) after fitting on `fraction` of the labels: `linear_top1` for
    all of them (the name the report reads), `linear_1pct_top1` for 1 %, `finetune_10pct_top1` for 10 %."""
    return f"{protocol}_top1" if fraction == 1 else f"{protocol}_{fraction * 100:g}pct_top1"


def label_subsets(labels: torch.Tensor, fractions: tuple[float, ...] | list[float],
                  seed: int) -> dict[float, torch.Tensor | None]:
    """Per label fraction, the indices of its class-balanced subset of `labels` (None for 1: all of them). Seeded by
    `seed` alone, so every method at a seed fits on the same images, and the smaller subsets nest in the larger."""
    return {f: None if f == 1 else balanced_subset(labels, f, generator_for(seed, "label-fraction"))
            for f in fractions}


def probe_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   config: ProbeConfig, device: torch.device) -> dict[str, float]:
    """k-NN (all labels) and linear-probe accuracies (percent) of one pair of feature sets, the probe once per label
    fraction. A probe on a fraction takes as many optimizer steps as the full one (more epochs over fewer
    features), so a small subset is not also an under-trained probe."""
    metrics = {"knn_top1": 100 * knn_accuracy(train_x, train_y, test_x, test_y, k=config.knn_k,
                                              temperature=config.knn_temperature)}
    full_steps = config.linear_epochs * math.ceil(len(train_x) / config.linear_batch_size)
    for fraction, idx in label_subsets(train_y, config.label_fractions, config.seed).items():
        x, y = (train_x, train_y) if idx is None else (train_x[idx], train_y[idx])
        epochs = math.ceil(full_steps / math.ceil(len(x) / config.linear_batch_size))
        linear = linear_probe(x, y, test_x, test_y, epochs=epochs, batch_size=config.linear_batch_size,
                              lr=config.linear_lr, weight_decay=config.linear_weight_decay,
                              optimizer=config.linear_optimizer, seed=config.seed, device=device)
        metrics[fraction_key("linear", fraction)] = 100 * linear["top1"]
    return metrics


def evaluate_encoder(encoder: Encoder, train: ImageTensors, test: ImageTensors, augment: BatchAugment,
                     config: ProbeConfig) -> dict[str, float]:
    """Features of `encoder` extracted once per split (`augment.eval`), then k-NN and linear probe (in %)."""
    device = resolve_device(config.device, param=config.device_param)
    began = time.perf_counter()
    feats = [extract_features(encoder, ds.images, augment, pool=config.pool, batch_size=config.batch_size,
                              device=device, desc=f"features ({split})")
             for split, ds in (("train", train), ("test", test))]
    extract_s = time.perf_counter() - began
    metrics = probe_features(feats[0], train.labels, feats[1], test.labels, config, device)
    metrics["feature_dim"] = feats[0].shape[1]
    metrics["extract_s"] = extract_s
    return metrics


def evaluate_pixels(train: ImageTensors, test: ImageTensors, augment: BatchAugment,
                    config: ProbeConfig) -> dict[str, float]:
    """The raw-pixel reference: the same protocol on flattened, normalized input pixels."""
    return probe_features(pixel_features(train.images, augment), train.labels, pixel_features(test.images, augment),
                          test.labels, config, resolve_device(config.device, param=config.device_param))
