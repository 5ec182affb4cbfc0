"""MixMIM (Liu et al., 2023): no mask tokens in the encoder. The masked tokens of each image are filled with
the visible tokens of its partner (sample B-1-i), a hierarchical encoder keeps the two sources apart, and the
decoder reconstructs both images.

    images [B, C, H, W] -> one source map per batch on the last grid (ratio 0.5; 1 = from the partner)
    -> HierEncoder: mix after patch embedding, attention restricted to same-source tokens -> [B, N, D]
    -> decoder: linear to its width; batch doubled: copy 1 keeps the own tokens (mask tokens where source=1),
       copy 2 the partner's (mask tokens where source=0); + sin-cos positions; blocks; linear to p*p*C
    -> combine: image i at source=1 from its own copy, at source=0 from copy 2 of sample B-1-i
    -> target: per-patch normalized pixels of each original (p = the last grid's stride); MSE over all positions.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mim.masking import SourceMap, check_pairs, combine_predictions, mixing_map
from mim.methods.base import NORM_PIX_NOTE, MIMMethod, StepOutput
from mim.models.attention import SplitQkvAttention
from mim.models.hier import HierEncoder, upsample_source
from mim.models.pos_embed import sincos_2d
from mim.models.vit import init_mae_weights
from mim.targets import normalize_patches, patchify, unpatchify


class MixDecoder(nn.Module):
    """Encoder tokens [B, N, D] -> predictions for both copies [2B, N, out_dim] (own tokens, then partner's)."""

    def __init__(self, grid: tuple[int, int], in_dim: int, out_dim: int, embed_dim: int, depth: int,
                 num_heads: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_2d(embed_dim, grid), persistent=False)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, qkv_bias=True, norm_layer=norm,
                                            attn_layer=SplitQkvAttention) for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.pred = nn.Linear(embed_dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        m = source.to(x.dtype).view(1, -1, 1)
        fill = self.mask_token.to(x.dtype)
        both = torch.cat([x * (1 - m) + fill * m, x * m + fill * (1 - m)]) + self.pos_embed.to(x.dtype)
        return self.pred(self.norm(self.blocks(both)))


class MixMIM(MIMMethod):
    name = "mixmim"
    picture_batch_multiple = 2  # image i is mixed with image B-1-i

    def __init__(self, encoder: HierEncoder, decoder: MixDecoder, mask_ratio: float, norm_pix_loss: bool) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> SourceMap:
        return mixing_map(self.encoder.grid, self.mask_ratio, generator)

    def predict(self, images: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Each image's predicted patches [B, N, p*p*C], every position predicted from a copy where it was hidden."""
        check_pairs(images.shape[0])
        tokens = self.encoder.forward_tokens(images, source)  # [B, N, D], mixed
        own, partner = self.decoder(tokens, source.flatten()).chunk(2)
        return combine_predictions(own, partner, source.flatten())

    def target(self, images: torch.Tensor) -> torch.Tensor:
        patches = patchify(images, self.encoder.patch_size)
        return normalize_patches(patches) if self.norm_pix_loss else patches

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        images, source = batch["images"], batch["mask"].source
        pred = self.predict(images, source).float()
        loss = (pred - self.target(images).float()).pow(2).mean()
        return {"loss": loss, "logs": {"loss_pixel": loss.detach()}}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The mixed input, each image's reconstruction, and its partner with the partner's reconstruction."""
        images, source = batch["images"], batch["mask"].source
        pred = self.predict(images, source).float()
        p, grid, c = self.encoder.patch_size, self.encoder.grid, images.shape[1]
        patches = patchify(images, p)
        if self.norm_pix_loss:
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(-1, keepdim=True)
        recon = unpatchify(pred, p, grid, c)
        m = upsample_source(source, images.shape[-2:]).to(images.dtype)
        return {"input": images * (1 - m) + images.flip(0) * m, "prediction": recon,
                "composite": images * (1 - m) + recon * m,  # own visible pixels, predicted where the partner's were
                "partner": images.flip(0), "partner prediction": recon.flip(0)}

    def picture_note(self) -> str:
        return NORM_PIX_NOTE if self.norm_pix_loss else ""


def build_mixmim(encoder: HierEncoder, *, mask_ratio: float, norm_pix_loss: bool, decoder_dim: int, decoder_depth: int,
                 decoder_heads: int) -> MixMIM:
    p, c = encoder.patch_size, encoder.spec.in_chans
    decoder = MixDecoder(encoder.grid, encoder.embed_dim, p * p * c, decoder_dim, decoder_depth, decoder_heads,
                         norm_eps=encoder.spec.norm_eps)
    init_mae_weights(decoder)
    return MixMIM(encoder, decoder, mask_ratio, norm_pix_loss)
