"""Weighted k-NN classification on cosine similarity (the DINO protocol), searched with faiss."""

from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Class of each test sample by a vote of its k nearest training samples (cosine similarity),
    each neighbour weighted by exp(similarity / temperature). Returns [N_test] int64."""
    if len(train_features) == 0:
        raise ValueError("k-NN needs at least one training feature")
    k = min(k, len(train_features))
    num_classes = num_classes or int(train_labels.max()) + 1
    train = F.normalize(train_features.float(), dim=1).numpy().astype(np.float32)
    test = F.normalize(test_features.float(), dim=1).numpy().astype(np.float32)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    sims, ids = index.search(test, k)  # [N, k] each
    sims, ids = torch.from_numpy(sims), torch.from_numpy(ids)
    weights = (sims / temperature).exp()
    votes = torch.zeros(len(test), num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, train_labels[ids], weights)
    return votes.argmax(dim=1)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy (0..1) of `knn_predict` on labelled test features."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_features, train_labels, test_features, k=k, temperature=temperature,
                       num_classes=num_classes)
    return float((pred == test_labels).float().mean())
