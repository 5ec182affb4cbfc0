"""Other projects' MAE weight layouts -> our MAE's state-dict keys (`encoder.*`, `decoder.*`), without importing them.

- HuggingFace `ViTMAEForPreTraining`: transformers 5 names (`vit.layers.0.attention.q_proj`) and the 4.x names
  (`vit.encoder.layer.0.attention.attention.query`) that checkpoints on the hub use; q, k, v are fused into timm's
  `qkv`.
- The official MAE checkpoints (`mae_pretrain_vit_base_full.pth`'s `model`): timm encoder keys at the top level
  (`blocks.0.attn.qkv.weight`) beside `mask_token`, `decoder_embed`, `decoder_pos_embed`, `decoder_blocks.N`,
  `decoder_norm`, `decoder_pred`. A plain timm ViT state dict is the same layout without the decoder.
"""

from __future__ import annotations

import re

import torch

_LEGACY = [  # transformers 4.x -> 5.x names
    (r"vit\.encoder\.layer\.", "vit.layers."),
    (r"^decoder\.decoder_encoder\.layer\.", "decoder.decoder_layers."),  # what transformers 5's save_pretrained writes
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
_RENAMES = [  # transformers 5.x -> ours
    (r"^vit\.embeddings\.cls_token$", "encoder.cls_token"),
    (r"^vit\.embeddings\.position_embeddings$", "encoder.pos_embed"),
    (r"^vit\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed.proj."),
    (r"^vit\.layernorm\.", "encoder.norm."),
    (r"^vit\.layers\.(\d+)\.", r"encoder.blocks.\1."),
    (r"^decoder\.decoder_layers\.(\d+)\.", r"decoder.blocks.\1."),
    (r"^decoder\.decoder_pos_embed$", "decoder.pos_embed"),
    (r"^decoder\.decoder_embed\.", "decoder.embed."),
    (r"^decoder\.decoder_norm\.", "decoder.norm."),
    (r"^decoder\.decoder_pred\.", "decoder.pred."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
]
_OFFICIAL_DECODER = [  # official MAE (and timm) -> ours; every other key is the encoder's
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_pos_embed$", "decoder.pos_embed"),
    (r"^decoder_embed\.", "decoder.embed."),
    (r"^decoder_blocks\.", "decoder.blocks."),
    (r"^decoder_norm\.", "decoder.norm."),
    (r"^decoder_pred\.", "decoder.pred."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def convert_vitmae_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ViTMAEForPreTraining state dict -> our `MAE` state dict (q, k, v fused into timm's qkv)."""
    renamed = {_rename(_rename(k, _LEGACY), _RENAMES): v for k, v in hf_state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in renamed.items():
        m = re.match(r"^(.*)\.attention\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault(f"{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"{key}: incomplete q/k/v projections in the HF checkpoint (have {sorted(parts)})")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def convert_mae_official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MAE checkpoint `model` (or a timm ViT state dict) -> our `MAE` state dict: the decoder's keys
    renamed, every other key under `encoder.` (timm's names are ours)."""
    out = {}
    for key, value in state.items():
        renamed = _rename(key, _OFFICIAL_DECODER)
        out[renamed if renamed != key else f"encoder.{key}"] = value
    return out


def is_vitmae_layout(keys: set[str]) -> bool:
    """HF ViTMAE names: `vit.embeddings...` / `decoder.decoder_...`."""
    return any(k.startswith(("vit.embeddings.", "vit.layers.", "vit.encoder.layer.", "decoder.decoder_"))
               for k in keys)


def is_timm_vit_layout(keys: set[str]) -> bool:
    """timm / official MAE names: a top-level `patch_embed.proj.weight`."""
    return "patch_embed.proj.weight" in keys
