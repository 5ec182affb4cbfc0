"""SimMIM (Xie et al., 2022): mask units of the image, keep a learned mask token in the encoder,
predict the raw pixels with a linear head and pixel shuffle, L1 on masked pixels.

    images [B, C, H, W] -> unit mask on the token grid (1 = masked) -> patch tokens with masked
    ones replaced by the mask token -> encoder over all tokens [B, 1+N, D] -> 1x1 conv to p*p*C
    + pixel shuffle [B, C, H, W] -> |pred - image| averaged over masked pixels and channels.
With a target module (HOG: MaskFeat) a linear head predicts each token's target vector, L2 on masked tokens.
With `views` > 1 each image is masked V times with disjoint visible sets (DMJD's sampler, on the same mask
units) and every view is a sample of the step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mim.analysis.pca import feature_panels
from mim.masking import (
    MultiViewMask,
    TokenMask,
    disjoint_views,
    expand_views,
    masked_mean,
    per_view,
    picture_masking,
    unit_masking,
)
from mim.methods.base import MIMMethod, StepOutput
from mim.models.vit import MaskedViT, init_mae_weights


class SimMIM(MIMMethod):
    name = "simmim"

    def __init__(self, encoder: MaskedViT, mask_ratio: float, mask_unit_size: int, target: nn.Module | None,
                 views: int):
        super().__init__()
        if mask_unit_size % encoder.patch_size:
            raise ValueError(f"mask_unit_size {mask_unit_size} is not a multiple of patch_size {encoder.patch_size}")
        self.encoder, self.views = encoder, views
        self.mask_ratio = mask_ratio
        self.mask_unit_size = mask_unit_size
        p, c = encoder.patch_size, encoder.spec.in_chans
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        self.target_module = target  # e.g. HOG (MaskFeat): a linear head per token, L2 on masked tokens
        if target is None:
            self.head = nn.Sequential(nn.Conv2d(encoder.embed_dim, p * p * c, kernel_size=1), nn.PixelShuffle(p))
        else:
            self.head = nn.Linear(encoder.embed_dim, target.dim)
        init_mae_weights(self.head)
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> TokenMask | MultiViewMask:
        e = self.encoder
        if self.views > 1:
            unit = self.mask_unit_size // e.patch_size
            return disjoint_views(batch_size, e.grid, self.mask_ratio, self.views, generator, unit)
        return unit_masking(batch_size, e.spec.img_size, e.patch_size, self.mask_unit_size, self.mask_ratio, generator)

    def picture_masks(self, batch_size: int, generator: torch.Generator) -> TokenMask:
        """The shared picture mask (`picture_masking`) at this method's ratio, in its mask units."""
        e = self.encoder
        return picture_masking(batch_size, e.grid, self.mask_unit_size // e.patch_size, self.mask_ratio, generator)

    def predict(self, images: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        """Pixels [B, C, H, W], or target vectors [B, N, D_t] with a target module."""
        tokens = self.encoder.embed_with_mask_token(images, mask.mask, self.mask_token)  # [B, N, D]
        x = self.encoder.forward_embedded(tokens)[:, 1:]  # [B, N, D]
        if self.target_module is not None:
            return self.head(x)
        b, n, d = x.shape
        h, w_ = self.encoder.grid
        return self.head(x.transpose(1, 2).reshape(b, d, h, w_))  # [B, C, H, W]

    def pixel_mask(self, mask: TokenMask) -> torch.Tensor:
        """Token mask [B, N] -> pixel mask [B, 1, H, W] (1 = masked)."""
        h, w = self.encoder.grid
        p = self.encoder.patch_size
        m = mask.mask.reshape(-1, 1, h, w)
        return m.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        images, mask = expand_views(batch["images"], batch["mask"])
        if self.target_module is not None:
            target = per_view(self.target_module(batch["images"]).float(), batch["mask"])  # once per image
            per_token = (self.predict(images, mask).float() - target).pow(2).mean(-1)
            loss = masked_mean(per_token, mask.mask)
            return {"loss": loss, "logs": {"loss_target": loss.detach()}}
        pred = self.predict(images, mask).float()
        pix = self.pixel_mask(mask)
        l1 = (pred - images.float()).abs() * pix
        loss = l1.sum() / (pix.sum() * images.shape[1]).clamp_min(1.0)
        return {"loss": loss, "logs": {"loss_pixel": loss.detach()}}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, mask = batch["images"], batch["mask"]
        if isinstance(mask, MultiViewMask):
            mask = mask.views[0]
        if self.target_module is not None:
            target, pred = self.target_module(images), self.predict(images, mask).float()
            return {"input": images * (1 - self.pixel_mask(mask)), **feature_panels(target, pred, images)}
        pred = self.predict(images, mask).float()
        pix = self.pixel_mask(mask)
        return {"input": images * (1 - pix), "prediction": pred, "composite": images * (1 - pix) + pred * pix}


def build_simmim(encoder: MaskedViT, *, mask_ratio: float, mask_unit_size: int, target: nn.Module | None,
                 views: int) -> SimMIM:
    return SimMIM(encoder, mask_ratio, mask_unit_size, target, views)
