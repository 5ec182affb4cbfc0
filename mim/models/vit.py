"""ViT encoder on timm's VisionTransformer, with the entry points masked image modeling needs.

`MaskedViT` *is* a timm `VisionTransformer` (same parameter names), so an exported state dict
loads into `timm.create_model(<timm_name>, ...)` unchanged. It implements the `mim.models.encoder.Encoder`
contract (`forward_tokens(x)` gives the patch tokens of images) and adds the token-level entry points the
methods corrupt it through (ViT only):
  - `patch_tokens(x)`: patch embeddings without position or class token,
  - `add_pos(tokens)`: add the patch position embedding,
  - `forward_embedded(tokens)`: prepend the class token to embedded tokens, run blocks and the final norm,
  - `forward_masked(x, ids_keep)`: MAE-style encoding of the visible tokens only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mim.masking import gather_tokens
from mim.models.attention import SplitQkvAttention
from mim.models.encoder import cpu_state, map_to_tokens
from mim.models.pos_embed import sincos_2d
from mim.models.state import load_state_strict

# size -> (embed_dim, depth, num_heads); the timm names below use the same shapes.
VIT_PRESETS: dict[str, tuple[int, int, int]] = {
    "micro": (128, 4, 4),  # CPU-sized default for Fashion-MNIST; exports under timm's tiny name + kwargs
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
TIMM_NAMES = {
    "micro": "vit_tiny_patch16_224",
    "tiny": "vit_tiny_patch16_224",
    "small": "vit_small_patch16_224",
    "base": "vit_base_patch16_224",
    "large": "vit_large_patch16_224",
}


@dataclass(frozen=True)
class ViTSpec:
    """Everything needed to rebuild an encoder: saved beside every checkpoint and export."""

    size: Literal["micro", "tiny", "small", "base", "large"] = "tiny"
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_path: float = 0.0
    pos_embed: Literal["sincos", "learn"] = "sincos"

    def resolved(self) -> dict[str, int]:
        """embed_dim / depth / num_heads with the preset filling what is not overridden."""
        d, n, h = VIT_PRESETS[self.size]
        return {"embed_dim": self.embed_dim or d, "depth": self.depth or n, "num_heads": self.num_heads or h}

    @property
    def arch(self) -> str:
        return "vit"

    @property
    def timm_name(self) -> str:
        return TIMM_NAMES[self.size]

    def timm_kwargs(self) -> dict:
        """Keyword arguments for `timm.create_model(self.timm_name, **kwargs)` giving the same architecture."""
        return {
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            **self.resolved(),
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> ViTSpec:
        return cls(**fields)

    def build(self) -> MaskedViT:
        """A randomly initialised encoder with MAE's initialization."""
        return build_vit(self)


class MaskedViT(VisionTransformer):
    """A timm VisionTransformer with masked-token entry points (see module docstring)."""

    def __init__(self, spec: ViTSpec, num_classes: int = 0, global_pool: str = "token") -> None:
        dims = spec.resolved()
        if spec.img_size % spec.patch_size:
            raise ValueError(f"img_size {spec.img_size} is not divisible by patch_size {spec.patch_size}")
        super().__init__(
            img_size=spec.img_size,
            patch_size=spec.patch_size,
            in_chans=spec.in_chans,
            num_classes=num_classes,
            global_pool=global_pool,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=spec.qkv_bias,
            drop_path_rate=spec.drop_path,
            norm_layer=partial(nn.LayerNorm, eps=spec.norm_eps),
            attn_layer=SplitQkvAttention,
            **dims,
        )
        self.spec = spec
        if spec.pos_embed == "sincos":
            self.pos_embed.data.copy_(sincos_2d(dims["embed_dim"], self.grid, cls_token=True))
            self.pos_embed.requires_grad_(False)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, D] patch embeddings (no position, no class token)."""
        return self.patch_embed(x)

    def add_pos(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add the patch-grid position embedding to [B, N, D] tokens in grid order."""
        return tokens + self.pos_embed[:, self.num_prefix_tokens :]

    def embed_with_mask_token(self, x: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images and a [B, N] mask (1 = masked) -> [B, N, D] position-embedded patch tokens with the
        masked ones replaced by `mask_token` [1, 1, D] (BEiT/SimMIM-style corruption inside the encoder)."""
        tokens = self.patch_tokens(x)
        w = mask.unsqueeze(-1).to(tokens.dtype)
        return self.add_pos(tokens * (1 - w) + mask_token.to(tokens.dtype) * w)

    def forward_embedded(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, K, D] position-embedded patch tokens -> [B, 1 + K, D] normed states (class token first)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.norm_pre(torch.cat([cls, tokens], dim=1))
        x = self.blocks(x)
        return self.norm(x)

    def forward_embedded_with_layer(self, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `forward_embedded`, also returning the (un-normed) output of block `layer` (1-based): CCViT's
        pixel branch reads an early layer. Both [B, 1 + K, D]."""
        if not 1 <= layer <= len(self.blocks):
            raise ValueError(f"layer {layer} is out of range for an encoder of depth {len(self.blocks)}")
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.norm_pre(torch.cat([cls, tokens], dim=1))
        hidden = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == layer:
                hidden = x
        return self.norm(x), hidden

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the visible tokens `ids_keep` [B, K] of images [B, C, H, W] -> [B, 1 + K, D]."""
        tokens = self.add_pos(self.patch_tokens(x))
        return self.forward_embedded(gather_tokens(tokens, ids_keep))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens, unmasked: [B, 1 + N, D] (same as timm's, with the fixed sin-cos table)."""
        return self.forward_embedded(self.add_pos(self.patch_tokens(x)))

    def forward_tokens(self, x: torch.Tensor, *, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, D] last-layer patch tokens (no class token), on the patch grid or brought to
        `grid`."""
        tokens = self.forward_features(x)[:, self.num_prefix_tokens :]
        if grid is None or tuple(grid) == self.grid:
            return tokens
        return map_to_tokens(tokens.transpose(1, 2).unflatten(2, self.grid), grid)

    def pooled(self, x: torch.Tensor, pool: Literal["cls", "mean"] = "cls") -> torch.Tensor:
        """A [B, D] image feature: the class token or the mean of the patch tokens."""
        feats = self.forward_features(x)
        return feats[:, 0] if pool == "cls" else feats[:, self.num_prefix_tokens :].mean(dim=1)

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """Layer-decay depths: patch embedding, class/register tokens and positions 0; block i -> i + 1; the final
        norm (and anything else) L + 1."""
        top = len(self.blocks) + 1

        def depth(name: str) -> int:
            if m := re.match(r"blocks\.(\d+)\.", name):
                return int(m[1]) + 1
            return 0 if name.startswith(("patch_embed", "cls_token", "pos_embed", "reg_token")) else top

        return {n: depth(n) for n, _ in self.named_parameters()}, top

    def export_state(self) -> dict[str, torch.Tensor]:
        """timm's keys without the classification head."""
        return cpu_state(self.state_dict(), drop_prefix="head.")

    def load_export_state(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Strictly load an exported state; this model's own head (if any) is kept."""
        head = {k: v for k, v in self.state_dict().items() if k.startswith("head.")}
        load_state_strict(self, {**state, **head}, origin)


def build_vit(spec: ViTSpec) -> MaskedViT:
    """An encoder with MAE's initialization (xavier-uniform linears, normal(0.02) class token)."""
    model = MaskedViT(spec)
    init_mae_weights(model)
    return model


def init_mae_weights(module: nn.Module) -> None:
    """MAE initialization: xavier-uniform linears and patch projection, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    if isinstance(module, MaskedViT):
        w = module.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(module.cls_token, std=0.02)
