"""Load HuggingFace `ViTMAEForPreTraining` weights into our MAE (no transformers import needed).

Accepts both the transformers 5 names (`vit.layers.0.attention.q_proj`) and the 4.x names
(`vit.encoder.layer.0.attention.attention.query`) used by checkpoints on the hub.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from mim.methods.mae import MAE
from mim.models.decoder import MaeDecoder
from mim.models.vit import VIT_PRESETS, MaskedViT, ViTSpec

_LEGACY = [  # transformers 4.x -> 5.x names
    (r"vit\.encoder\.layer\.", "vit.layers."),
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


def mae_from_vitmae_config(config: dict[str, Any]) -> MAE:
    """An (untrained) MAE with the architecture of a ViTMAE config (`ViTMAEConfig.to_dict()`)."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"ViTMAE hidden_act {config['hidden_act']!r} is not supported (only exact 'gelu')")
    dims = (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"])
    size = next((name for name, preset in VIT_PRESETS.items() if preset == dims), "base")
    spec = ViTSpec(
        size=size,
        img_size=config["image_size"],
        patch_size=config["patch_size"],
        in_chans=config.get("num_channels", 3),
        embed_dim=dims[0],
        depth=dims[1],
        num_heads=dims[2],
        mlp_ratio=config["intermediate_size"] / dims[0],
        qkv_bias=config.get("qkv_bias", True),
        norm_eps=config.get("layer_norm_eps", 1e-12),
        pos_embed="sincos",
    )
    encoder = MaskedViT(spec)
    out_dim = spec.patch_size**2 * spec.in_chans
    decoder = MaeDecoder(
        encoder.grid, dims[0], out_dim,
        embed_dim=config["decoder_hidden_size"],
        depth=config["decoder_num_hidden_layers"],
        num_heads=config["decoder_num_attention_heads"],
        mlp_ratio=config["decoder_intermediate_size"] / config["decoder_hidden_size"],
        norm_eps=spec.norm_eps,
    )
    return MAE(encoder, decoder, mask_ratio=config.get("mask_ratio", 0.75),  # transformers' ViTMAEConfig defaults
               norm_pix_loss=config.get("norm_pix_loss", False), target=None, views=1)


def mae_from_vitmae(config: dict[str, Any], hf_state: dict[str, torch.Tensor]) -> MAE:
    """Our MAE carrying the weights of a HF ViTMAEForPreTraining (strict: every tensor must map)."""
    model = mae_from_vitmae_config(config)
    state = convert_vitmae_state_dict(hf_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"ViTMAE conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model
