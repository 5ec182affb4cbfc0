"""Layer-wise learning-rate decay for fine-tuning (BEiT/MAE): a parameter at depth i of L gets
lr * decay^(L + 1 - i), so early layers move less than late ones; the head (outside the encoder) gets lr.

Depth by encoder kind:
- ViT (`MaskedViT`): patch embedding, class token and positions 0; block i -> i + 1; final norm L + 1.
- hierarchical (`HierEncoder`): blocks counted across stages in order (stage 1's first block is 1); a patch
  merge belongs to the block after it; patch embedding 0; final norm L + 1.
- CNN (`CnnEncoder`, timm ResNets): the stem 0; `layer{k}` -> k; anything after the last stage L + 1.
"""

from __future__ import annotations

import re

from torch import nn

from mim.engine.optim import NO_DECAY_NAMES
from mim.models.cnn import CnnEncoder
from mim.models.hier import HierEncoder


def encoder_layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: depth}, L + 1): the depth of every encoder parameter and the head's depth."""
    names = [n for n, _ in encoder.named_parameters()]
    if isinstance(encoder, HierEncoder):
        starts, total = [], 0
        for stage in encoder.stages:
            starts.append(total)
            total += len(stage.blocks)
        top = total + 1

        def depth(name: str) -> int:
            if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", name):
                return starts[int(m[1])] + int(m[2]) + 1
            if m := re.match(r"merges\.(\d+)\.", name):
                return starts[int(m[1]) + 1] + 1
            return 0 if name.startswith(("patch_embed", "embed_norm")) else top
    elif isinstance(encoder, CnnEncoder):
        stages = sorted({int(m[1]) for n in names if (m := re.match(r"body\.layer(\d+)\.", n))})
        top = (max(stages) if stages else 0) + 1

        def depth(name: str) -> int:
            if m := re.match(r"body\.layer(\d+)\.", name):
                return int(m[1])
            return 0 if name.startswith(("body.conv1", "body.bn1", "body.stem")) else top
    else:  # ViT
        top = len(encoder.blocks) + 1

        def depth(name: str) -> int:
            if m := re.match(r"blocks\.(\d+)\.", name):
                return int(m[1]) + 1
            return 0 if name.startswith(("patch_embed", "cls_token", "pos_embed", "reg_token")) else top
    return {n: depth(n) for n in names}, top


def layer_decay_groups(model: nn.Module, encoder_attr: str, lr: float, weight_decay: float,
                       decay: float) -> list[dict]:
    """AdamW parameter groups of `model` (whose encoder is `model.<encoder_attr>`): one per (depth, decay or not),
    each with `lr` = lr * decay^(top - depth) and its `lr_scale`; 1-d weights, biases and tokens undecayed."""
    ids, top = encoder_layer_ids(getattr(model, encoder_attr))
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        inner = name.removeprefix(encoder_attr + ".")
        depth = ids[inner] if name.startswith(encoder_attr + ".") else top
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES
        scale = decay ** (top - depth)
        group = groups.setdefault((depth, no_wd), {"params": [], "names": [], "lr": lr * scale, "lr_scale": scale,
                                                   "weight_decay": 0.0 if no_wd else weight_decay})
        group["params"].append(p)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]
