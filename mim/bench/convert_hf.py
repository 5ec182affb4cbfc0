"""Our MAE with the architecture and weights of a HuggingFace `ViTMAEForPreTraining` (no transformers import
needed), for the benchmark and the equivalence test; the key conversion is `mim.models.convert`'s (also what
`model.init_from` uses)."""

from __future__ import annotations

from typing import Any

import torch

from mim.methods.mae import MAE
from mim.models.convert import convert_vitmae_state_dict
from mim.models.decoder import MaeDecoder
from mim.models.vit import VIT_PRESETS, MaskedViT, ViTSpec


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
               norm_pix_loss=config.get("norm_pix_loss", False), target=None, views=1,
               mask_count="official")  # transformers' len_keep = int(N * (1 - mask_ratio))


def mae_from_vitmae(config: dict[str, Any], hf_state: dict[str, torch.Tensor]) -> MAE:
    """Our MAE carrying the weights of a HF ViTMAEForPreTraining (strict: every tensor must map)."""
    model = mae_from_vitmae_config(config)
    state = convert_vitmae_state_dict(hf_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"ViTMAE conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model
