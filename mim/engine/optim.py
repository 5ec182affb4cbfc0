"""AdamW with the MIM conventions: lr scaled by batch / 256, no decay on norms, biases and tokens."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "reg_token")


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule: lr = base_lr * global_batch / 256."""
    return base_lr * global_batch / 256


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weight matrices and undecayed 1-d params (norms, biases) and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: str = "auto",
) -> torch.optim.AdamW:
    """AdamW over `param_groups`; fused kernels on CUDA when `fused` is "auto" or "on"."""
    on_cuda = next(model.parameters()).is_cuda
    if fused == "on" and not on_cuda:
        raise ValueError("optim.fused=on needs the model on a CUDA device")
    use_fused = fused == "on" or (fused == "auto" and on_cuda)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=use_fused or None)
