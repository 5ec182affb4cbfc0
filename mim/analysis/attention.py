"""Where a ViT's class token looks: the last block's attention weights, per head.

The encoder's attention runs on `F.scaled_dot_product_attention`, which returns no weights, so for this one block
they are computed explicitly from the same projections: q, k = the block's qkv on its normed input, softmax of
q k^T * scale. `last_block_attention(...) @ v` projected by the block's `proj` is the block's attention output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mim.models.vit import MaskedViT


def last_block_inputs(encoder: MaskedViT, images: torch.Tensor) -> torch.Tensor:
    """[B, 1 + N, D]: the tokens entering the last block (class token first), as `forward_features` computes them."""
    x = encoder.norm_pre(torch.cat([(encoder.cls_token + encoder.pos_embed[:, :1]).expand(len(images), -1, -1),
                                    encoder.add_pos(encoder.patch_tokens(images))], dim=1))
    for block in encoder.blocks[:-1]:
        x = block(x)
    return x


@torch.no_grad()
def last_block_attention(encoder: MaskedViT, images: torch.Tensor) -> torch.Tensor:
    """[B, heads, 1 + N, 1 + N] attention weights of the last block on `images` (rows sum to 1)."""
    block = encoder.blocks[-1]
    attn = block.attn
    y = block.norm1(last_block_inputs(encoder, images))
    b, n, _ = y.shape
    qkv = attn.qkv(y).view(b, n, 3, attn.num_heads, attn.head_dim)  # [B, N, 3, H, hd]
    q, k, _ = (t.transpose(1, 2) for t in qkv.unbind(2))  # each [B, H, N, hd]
    q, k = attn.q_norm(q), attn.k_norm(k)
    return F.softmax((q.float() @ k.float().transpose(-2, -1)) * attn.scale, dim=-1)


def cls_attention_maps(encoder: MaskedViT, images: torch.Tensor) -> torch.Tensor:
    """[B, heads, H, W]: the class token's last-layer attention to each patch, per head, upsampled (nearest) to the
    image size. A row of one head sums to 1 minus the class token's attention to itself (and to other prefix
    tokens), before upsampling."""
    weights = last_block_attention(encoder, images)[:, :, 0, encoder.num_prefix_tokens :]  # [B, H, N]
    maps = weights.unflatten(-1, encoder.grid)  # [B, H, gh, gw]
    return F.interpolate(maps, size=images.shape[-2:], mode="nearest")
