"""k-NN and linear probe of a frozen encoder on a labelled train/test pair."""

from __future__ import annotations

import logging
import time

import torch

from mim.data import ImageTensors, load_dataset
from mim.engine.runtime import resolve_device
from mim.evaluation.features import extract_features, pixel_features
from mim.evaluation.knn import knn_accuracy
from mim.evaluation.linear import linear_probe
from mim.models.export import Encoder
from mim.params import DataParams, EvalParams
from mim.rng import generator_for

log = logging.getLogger("mim.evaluate")


def load_eval_data(data: DataParams, params: EvalParams) -> tuple[ImageTensors, ImageTensors]:
    """The labelled train and eval splits, optionally seeded subsets of each."""
    train, test = (load_dataset(data.source, split, size=data.image_size, strict=data.strict, seed=params.seed)
                   for split in (data.train_split, data.eval_split))
    return eval_subsets(train, test, params)


def eval_subsets(train: ImageTensors, test: ImageTensors, params: EvalParams) -> tuple[ImageTensors, ImageTensors]:
    """Check both splits are labelled and cut the seeded subsets `params` asks for."""
    out = []
    for split, ds, n in (("train", train, params.train_subset), ("test", test, params.test_subset)):
        if not ds.is_labeled:
            raise ValueError(f"{ds.source} ({split}): evaluation needs class labels (class sub-folders)")
        out.append(ds.subset(n, generator_for(params.seed, "eval", split)) if n else ds)
    return out[0], out[1]


def probe_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   params: EvalParams, device: torch.device) -> dict[str, float]:
    """k-NN and linear-probe accuracies (percent) of one pair of feature sets."""
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=params.knn.k, temperature=params.knn.temperature)
    lp = params.linear
    linear = linear_probe(train_x, train_y, test_x, test_y, epochs=lp.epochs, batch_size=lp.batch_size, lr=lp.lr,
                          weight_decay=lp.weight_decay, optimizer=lp.optimizer, seed=params.seed, device=device)
    return {"knn_top1": 100 * knn, "linear_top1": 100 * linear["top1"]}


def evaluate_encoder(encoder: Encoder, train: ImageTensors, test: ImageTensors, params: EvalParams,
                     data: DataParams) -> dict[str, float]:
    """Features of `encoder` extracted once per split, then k-NN and linear probe (accuracies in %)."""
    device = resolve_device(params.device)
    augment = data.batch_augment()
    began = time.perf_counter()
    feats = [extract_features(encoder, ds.images, augment, pool=params.pool, batch_size=params.batch_size,
                              device=device) for ds in (train, test)]
    extract_s = time.perf_counter() - began
    metrics = probe_features(feats[0], train.labels, feats[1], test.labels, params, device)
    metrics["feature_dim"] = feats[0].shape[1]
    metrics["extract_s"] = extract_s
    return metrics


def evaluate_pixels(train: ImageTensors, test: ImageTensors, params: EvalParams, data: DataParams) -> dict[str, float]:
    """The raw-pixel reference: the same protocol on flattened, normalized input pixels."""
    augment = data.batch_augment()
    return probe_features(pixel_features(train.images, augment), train.labels, pixel_features(test.images, augment),
                          test.labels, params, resolve_device(params.device))
