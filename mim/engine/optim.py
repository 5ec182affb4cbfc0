"""AdamW with the MIM conventions: lr scaled by batch / 256, no decay on norms, biases and tokens."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "reg_token", "relative_position_bias_table")


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule: lr = base_lr * global_batch / 256."""
    return base_lr * global_batch / 256


def param_groups(model: nn.Module, weight_decay: float,
                 overrides: dict[str | tuple[str, ...], dict[str, float | None]] | None = None) -> list[dict]:
    """Decayed weight matrices and undecayed 1-d params (norms, biases) and tokens: two groups, plus two more
    for each `overrides` entry {name prefix(es): {"lr_scale", "weight_decay" (None = the shared one)}}, which
    gives those parameters the settings of an optimizer of their own (e.g. CIM's generator)."""
    settings = {"": {"lr_scale": 1.0, "weight_decay": weight_decay}}
    for prefix, o in (overrides or {}).items():
        wd = o.get("weight_decay")
        settings[prefix] = {"lr_scale": float(o.get("lr_scale") or 1.0), "weight_decay": weight_decay if wd is None
                            else float(wd)}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {(k, d): [] for k in settings for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = next((k for k in settings if k and name.startswith(k)), "")
        decayed = not (p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES)
        groups[(owner, decayed)].append(p)
    return [{"params": ps, "weight_decay": settings[k]["weight_decay"] if decayed else 0.0,
             "lr_scale": settings[k]["lr_scale"]}
            for (k, decayed), ps in groups.items() if ps or not k]


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: str = "auto",
    overrides: dict[str | tuple[str, ...], dict[str, float | None]] | None = None,
) -> torch.optim.AdamW:
    """AdamW over `param_groups` (each group at `lr` x its lr_scale); fused kernels on CUDA when `fused` is
    "auto" or "on"."""
    on_cuda = next(model.parameters()).is_cuda
    if fused == "on" and not on_cuda:
        raise ValueError("optim.fused=on needs the model on a CUDA device")
    use_fused = fused == "on" or (fused == "auto" and on_cuda)
    groups = [{**g, "lr": lr * g["lr_scale"]} for g in param_groups(model, weight_decay, overrides)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=use_fused or None)
