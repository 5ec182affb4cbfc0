"""CCViT (centroid-centered modeling): predict each corrupted patch's k-means centroid id, and its pixels.

    images [B, C, H, W] (normalized) -> raw pixels in [0, 1] -> patch vectors [B, N, C*p*p] (c, py, px)
    -> centroid ids [B, N] (the targets) -> replace 10 % of the *visible* patches by their own centroid
    -> BEiT block mask (1 = masked): masked patch embeddings become the mask token
    -> encoder over all tokens; token head on the last layer [B, N, K];
       pixel branch: 2 blocks over [last CLS ; patch states of an early layer] -> [B, N, C*p*p]
    -> on masked + replaced positions: CE(ids) * w_ce + MSE(per-patch normalized pixels) * w_mse.
The pixel branch is dropped after pre-training (only `encoder` is exported).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from mim.masking import MaskAndReplace, block_masking, choose_unmasked, count_for_ratio, masked_mean
from mim.methods.base import MIMMethod, StepOutput
from mim.models.attention import SplitQkvAttention
from mim.models.vit import MaskedViT, init_mae_weights
from mim.targets import from_patch_vectors, normalize_patches, patch_vectors
from mim.targets.centroids import CentroidTokenizer, nearest_centroid


class CCViT(MIMMethod):
    name = "ccvit"

    def __init__(self, encoder: MaskedViT, tokenizer: CentroidTokenizer, *, mean: tuple[float, ...],
                 std: tuple[float, ...], mask_ratio: float, min_block: int, replace_ratio: float,
                 pixel_layer: int | None, pixel_depth: int, ce_weight: float, mse_weight: float) -> None:
        super().__init__()
        p, c = encoder.patch_size, encoder.spec.in_chans
        tokenizer.check_fits(p, c)
        self.encoder, self.tokenizer = encoder, tokenizer
        self.register_buffer("centroids", tokenizer.centroids.clone(), persistent=False)  # follows .to(device)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        n, d = encoder.num_patches, encoder.embed_dim
        self.num_masked, self.num_replaced = count_for_ratio(n, mask_ratio), count_for_ratio(n, replace_ratio)
        self.min_block = min_block
        self.pixel_layer = pixel_layer or max(1, round(len(encoder.blocks) * 3 / 4))
        self.ce_weight, self.mse_weight = ce_weight, mse_weight
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.token_head = nn.Linear(d, tokenizer.k)
        heads = encoder.blocks[0].attn.num_heads
        norm = partial(nn.LayerNorm, eps=encoder.spec.norm_eps)
        self.pixel_blocks = nn.Sequential(*[Block(d, heads, qkv_bias=True, norm_layer=norm,
                                                  attn_layer=SplitQkvAttention) for _ in range(pixel_depth)])
        self.pixel_norm = norm(d)
        self.pixel_head = nn.Linear(d, p * p * c)
        init_mae_weights(nn.ModuleList([self.token_head, self.pixel_blocks, self.pixel_norm, self.pixel_head]))
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> MaskAndReplace:
        mask = block_masking(batch_size, self.encoder.grid, self.num_masked, generator, min_block=self.min_block)
        return MaskAndReplace(mask, choose_unmasked(mask.mask, self.num_replaced, generator))

    def _assign(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, N, C*p*p] -> nearest-centroid ids [B, N] (exact), with the centroids already on the device."""
        return nearest_centroid(pixels.flatten(0, 1), self.centroids).view(pixels.shape[:-1])

    def corrupt(self, images: torch.Tensor, corruption: MaskAndReplace) -> tuple[torch.Tensor, ...]:
        """(corrupted normalized images, centroid ids, original patch vectors in [0, 1])."""
        p, grid, c = self.encoder.patch_size, self.encoder.grid, images.shape[1]
        with torch.autocast(images.device.type, enabled=False):
            pixels = patch_vectors(images.float() * self.std + self.mean, p)  # [B, N, C*p*p] in [0, 1]
            ids = self._assign(pixels)  # [B, N]
            replaced = torch.where(corruption.replace.unsqueeze(-1), self.centroids[ids], pixels)
            corrupted = (from_patch_vectors(replaced, p, grid, c) - self.mean) / self.std
        return corrupted, ids, pixels

    def predict(self, corrupted: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token logits [B, N, K] and pixel predictions [B, N, C*p*p] for corrupted images and a [B, N] mask."""
        tokens = self.encoder.embed_with_mask_token(corrupted, mask, self.mask_token)  # [B, N, D]
        final, early = self.encoder.forward_embedded_with_layer(tokens, self.pixel_layer)
        logits = self.token_head(final[:, 1:])  # [B, N, K]
        x = self.pixel_blocks(torch.cat([final[:, :1], early[:, 1:]], dim=1))  # [B, 1+N, D]
        return logits, self.pixel_head(self.pixel_norm(x)[:, 1:])

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        corruption: MaskAndReplace = batch["mask"]
        corrupted, ids, pixels = self.corrupt(batch["images"], corruption)
        logits, pred = self.predict(corrupted, corruption.mask.mask)
        weight = (corruption.mask.mask.bool() | corruption.replace).float()  # [B, N] positions with a loss
        ce = masked_mean(F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none"), weight)
        mse = masked_mean((pred.float() - normalize_patches(pixels)).pow(2).mean(dim=-1), weight)
        acc = masked_mean((logits.argmax(-1) == ids).float(), weight)
        loss = self.ce_weight * ce + self.mse_weight * mse
        return {"loss": loss, "logs": {"loss_token": ce.detach(), "loss_pixel": mse.detach(), "token_acc": acc}}

    def picture_note(self) -> str:
        return ("prediction de-normalized with the true patch mean/std (the pixel branch predicts per-patch "
                "normalized pixels)")

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, corruption = batch["images"], batch["mask"]
        corrupted, ids, pixels = self.corrupt(images, corruption)
        logits, pred = self.predict(corrupted, corruption.mask.mask)
        p, grid, c = self.encoder.patch_size, self.encoder.grid, images.shape[1]
        pred = pred.float() * (pixels.var(-1, keepdim=True) + 1e-6) ** 0.5 + pixels.mean(-1, keepdim=True)
        keep = (1 - corruption.mask.mask).unsqueeze(-1)
        shown = patch_vectors(corrupted * self.std + self.mean, p) * keep  # masked patches black, replaced ones in
        to_image = lambda v: (from_patch_vectors(v, p, grid, c) - self.mean) / self.std  # noqa: E731
        return {"input": to_image(shown), "prediction": to_image(pred),
                "composite": to_image(shown + pred * (1 - keep)),
                "predicted centroids": to_image(self.centroids[logits.argmax(-1)]),
                "target centroids": to_image(self.centroids[ids])}


def build_ccvit(encoder: MaskedViT, tokenizer: CentroidTokenizer, **kwargs: Any) -> CCViT:
    return CCViT(encoder, tokenizer, **kwargs)
