"""MAE (He et al., 2022): encode the visible 25 % of tokens, decode all, regress masked pixels.

    images [B, C, H, W] -> random mask (1 = masked) -> encoder on visible tokens [B, 1+K, D]
    -> decoder with mask tokens [B, N, D_t] -> target: per-patch normalized pixels (or a target module's
       vectors, e.g. HOG as in FastMIM) -> MSE averaged over masked patches.
With `views` > 1 each image is masked V times with disjoint visible sets (DMJD's sampler) and every view
is a sample of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mim.analysis.pca import feature_panels
from mim.masking import (
    MaskCount,
    MultiViewMask,
    TokenMask,
    disjoint_views,
    expand_views,
    masked_mean,
    per_view,
    picture_masking,
    random_masking,
)
from mim.methods.base import NORM_PIX_NOTE, MIMMethod, StepOutput
from mim.models.decoder import MaeDecoder
from mim.models.vit import MaskedViT, init_mae_weights
from mim.targets import normalize_patches, patchify, unpatchify


class MAE(MIMMethod):
    name = "mae"

    def __init__(self, encoder: MaskedViT, decoder: MaeDecoder, mask_ratio: float, norm_pix_loss: bool,
                 target: nn.Module | None, views: int, mask_count: MaskCount):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.target_module, self.views = target, views
        self.mask_count = mask_count  # how mask_ratio becomes a token count (MAE's code: `official`)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> TokenMask | MultiViewMask:
        if self.views > 1:
            return disjoint_views(batch_size, self.encoder.grid, self.mask_ratio, self.views, generator,
                                  count=self.mask_count)
        return random_masking(batch_size, self.encoder.num_patches, self.mask_ratio, generator, count=self.mask_count)

    def picture_masks(self, batch_size: int, generator: torch.Generator) -> TokenMask:
        """The shared picture mask (`picture_masking`) at this method's ratio, in `mask_unit` token units."""
        return picture_masking(batch_size, self.encoder.grid, self.mask_unit, self.mask_ratio, generator)

    @property
    def mask_unit(self) -> int:
        """Side of a mask unit in tokens (1: every token is drawn on its own)."""
        return 1

    def picture_note(self) -> str:
        if self.norm_pix_loss and self.target_module is None:
            return NORM_PIX_NOTE
        return ""

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, D_t] regression targets: the target module's (HOG, teacher features) or pixels."""
        if self.target_module is not None:
            return self.target_module(images)
        patches = patchify(images, self.encoder.patch_size)  # [B, N, p*p*C]
        return normalize_patches(patches) if self.norm_pix_loss else patches

    def predict(self, images: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        latent = self.encoder.forward_masked(images, mask.ids_keep)  # [B, 1+K, D]
        return self.decoder(latent, mask.ids_restore)  # [B, N, p*p*C]

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        target = per_view(self.target(batch["images"]).float(), batch["mask"])  # once per image, shared by its views
        images, mask = expand_views(batch["images"], batch["mask"])
        pred = self.predict(images, mask)
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # [B, N]
        loss = masked_mean(per_patch, mask.mask)
        name = "loss_pixel" if self.target_module is None else "loss_target"
        return {"loss": loss, "logs": {name: loss.detach()}}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, mask = batch["images"], batch["mask"]
        if isinstance(mask, MultiViewMask):
            mask = mask.views[0]
        if self.target_module is not None:  # feature targets as pictures: shared top-3 principal components
            target, pred = self.target(images), self.predict(images, mask).float()
            keep = (1 - mask.mask).unsqueeze(-1)
            p, grid, c = self.encoder.patch_size, self.encoder.grid, images.shape[1]
            return {"input": unpatchify(patchify(images, p) * keep, p, grid, c), **feature_panels(target, pred, images)}
        pred = self.predict(images, mask).float()
        patches = patchify(images, self.encoder.patch_size)
        if self.norm_pix_loss:  # undo the per-patch normalization with the true patch statistics
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(-1, keepdim=True)
        keep = (1 - mask.mask).unsqueeze(-1)
        grid, p, c = self.encoder.grid, self.encoder.patch_size, images.shape[1]
        return {
            "input": unpatchify(patches * keep, p, grid, c),
            "prediction": unpatchify(pred, p, grid, c),
            "composite": unpatchify(patches * keep + pred * (1 - keep), p, grid, c),
        }


def build_mae(
    encoder: MaskedViT,
    *,
    mask_ratio: float,
    norm_pix_loss: bool,
    decoder_dim: int,
    decoder_depth: int,
    decoder_heads: int,
    target: nn.Module | None,
    views: int,
    mask_count: MaskCount,
) -> MAE:
    """MAE around `encoder` with a decoder of its own width/depth predicting p*p*C values per patch (or the
    target module's `dim`)."""
    out_dim = target.dim if target is not None else encoder.patch_size**2 * encoder.spec.in_chans
    decoder = MaeDecoder(
        encoder.grid, encoder.embed_dim, out_dim, decoder_dim, decoder_depth, decoder_heads,
        norm_eps=encoder.spec.norm_eps,
    )
    init_mae_weights(decoder)
    return MAE(encoder, decoder, mask_ratio, norm_pix_loss, target=target, views=views, mask_count=mask_count)
