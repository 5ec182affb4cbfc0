"""MAE's light transformer decoder: visible latents + mask tokens -> per-patch predictions."""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mim.masking import restore_tokens
from mim.models.attention import SplitQkvAttention
from mim.models.pos_embed import sincos_2d


class MaeDecoder(nn.Module):
    """Embeds [B, 1 + K, D_enc] encoder states, fills masked slots with a mask token, restores
    grid order, adds a fixed sin-cos position embedding and predicts `out_dim` values per patch."""

    def __init__(
        self,
        grid: tuple[int, int],
        in_dim: int,
        out_dim: int,
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_2d(embed_dim, grid, cls_token=True), requires_grad=False)
        block = partial(Block, qkv_bias=True, norm_layer=norm, attn_layer=SplitQkvAttention)
        self.blocks = nn.Sequential(*[block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.pred = nn.Linear(embed_dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [B, 1 + K, D_enc] (class token first), ids_restore [B, N] -> [B, N, out_dim]."""
        x = self.embed(latent)
        patches = restore_tokens(x[:, 1:], ids_restore, self.mask_token.to(x.dtype))  # [B, N, D]
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.pred(x[:, 1:])
