"""Linear probe on frozen features: BatchNorm without affine, then one linear layer (MAE's protocol), trained
with AdamW, momentum SGD or LARS (MAE's choice at batch 16384)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from mim.evaluation.lars import LARS
from mim.progress import Progress
from mim.rng import generator_for


def probe_optimizer(params: list[nn.Parameter], name: Literal["adamw", "sgd", "lars"], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """The linear head's optimizer; SGD and LARS with momentum 0.9."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown linear-probe optimizer {name!r} (adamw, sgd or lars)")


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train BN(affine=False) + Linear on features extracted once; `optimizer` with cosine decay.

    Returns top-1 accuracy (0..1) on the test features and on the training features. Progress (epoch, loss,
    and at the end the accuracies) goes to logger `mim.evaluate`.
    """
    device = torch.device(device)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(train_features.shape[1], affine=False),
                         nn.Linear(train_features.shape[1], num_classes)).to(device)
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    x, y = train_features.float().to(device), train_labels.to(device)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    opt = probe_optimizer(list(head.parameters()), optimizer, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    progress = Progress(epochs * steps_per_epoch, "linear probe", "steps", logger="mim.evaluate")
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator_for(seed, "probe", epoch)).to(device)
        head.train()
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = loss_fn(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            progress.update(info=lambda epoch=epoch, loss=loss: {"epoch": f"{epoch + 1}/{epochs}", "loss": loss.item()})
    head.eval()
    with torch.no_grad():
        test_acc = (head(test_features.float().to(device)).argmax(1) == test_labels.to(device)).float().mean()
        train_acc = (head(x).argmax(1) == y).float().mean()
    result = {"top1": float(test_acc), "train_top1": float(train_acc)}
    progress.close(**result)
    return result
