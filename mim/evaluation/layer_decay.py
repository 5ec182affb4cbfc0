"""Layer-wise learning-rate decay for fine-tuning (BEiT/MAE): a parameter at depth i of L gets
lr * decay^(L + 1 - i), so early layers move less than late ones; the head (outside the encoder) gets lr.

Each encoder numbers its own parameters (`Encoder.layer_ids`):
- ViT (`MaskedViT`): patch embedding, class token and positions 0; block i -> i + 1; final norm L + 1.
- hierarchical (`HierEncoder`): blocks counted across stages in order (stage 1's first block is 1); a patch
  merge belongs to the block after it; patch embedding 0; final norm L + 1.
- CNN (`CnnEncoder`, timm ResNets): the stem 0; `layer{k}` -> k; anything after the last stage L + 1.
"""

from __future__ import annotations

from torch import nn

from mim.engine.optim import NO_DECAY_NAMES
from mim.models.encoder import Encoder


def layer_decay_groups(model: nn.Module, encoder_attr: str, lr: float, weight_decay: float,
                       decay: float) -> list[dict]:
    """AdamW parameter groups of `model` (whose encoder is `model.<encoder_attr>`): one per (depth, decay or not),
    each with `lr` = lr * decay^(top - depth) and its `lr_scale`; 1-d weights, biases and tokens undecayed."""
    encoder: Encoder = getattr(model, encoder_attr)
    ids, top = encoder.layer_ids()
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
