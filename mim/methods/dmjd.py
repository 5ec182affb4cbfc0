"""DMJD (Ma et al., 2023): disjoint masking with joint distillation.

    images [B, C, H, W] -> V masked views per image, visible sets disjoint (`disjoint_views`)
    -> the batch repeated per view [V*B]; encoder on each view's visible tokens [V*B, 1+K, D]
    -> invisible branch: MAE decoder -> targets of the masked tokens, L2 averaged over masked tokens
    -> visible branch: projector (Linear-LN-GELU x2, Linear-LN without affine, at the decoder's width) on the
       encoder's visible tokens, then a linear predictor -> targets of those tokens, SmoothL1(beta) averaged
       over visible tokens
    -> L = L_mim + visible_weight * L_vis.
Targets: HOG (DMJD's flavour by default) or a frozen teacher's features, computed once per image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mim.masking import MaskCount, MultiViewMask, disjoint_views, expand_views, gather_tokens, masked_mean, per_view
from mim.methods.base import StepOutput
from mim.methods.mae import MAE
from mim.models.decoder import MaeDecoder
from mim.models.vit import MaskedViT, init_mae_weights


def projector(dim: int, hidden: int, out_dim: int, eps: float = 1e-6) -> nn.Sequential:
    """DMJD's visible-branch head, as in the authors' code: a projector (Linear-LN-GELU twice, then Linear and a
    LayerNorm without affine, `hidden` wide: their decoder's width) and a linear predictor to the target's `out_dim`.
    The predictor matters: without it every prediction has zero mean and unit variance over its features."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden, eps=eps), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps, elementwise_affine=False),
                         nn.Linear(hidden, out_dim))


class DMJD(MAE):
    name = "dmjd"

    def __init__(self, encoder: MaskedViT, decoder: MaeDecoder, target: nn.Module, *, mask_ratio: float, views: int,
                 unit: int, visible_weight: float, beta: float, lr_per_mask_ratio: bool, mask_count: MaskCount) -> None:
        super().__init__(encoder, decoder, mask_ratio, norm_pix_loss=False, target=target, views=views,
                         mask_count=mask_count)
        self.unit, self.visible_weight, self.beta = unit, visible_weight, beta
        # the authors' lr rule: their effective batch is batch x pred_ratio / mask_ratio (pred_ratio 1)
        self.lr_factor = 1 / mask_ratio if lr_per_mask_ratio else 1.0
        self.projector = projector(encoder.embed_dim, decoder.embed.out_features, target.dim, encoder.spec.norm_eps)
        init_mae_weights(self.projector)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> MultiViewMask:  # views=1 too
        return disjoint_views(batch_size, self.encoder.grid, self.mask_ratio, self.views, generator, self.unit,
                              count=self.mask_count)

    @property
    def mask_unit(self) -> int:
        return self.unit

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        views: MultiViewMask = batch["mask"]
        target = self.target(batch["images"]).float()  # [B, N, D_t], once per image
        images, mask = expand_views(batch["images"], views)
        target = per_view(target, views)  # [V*B, N, D_t]
        latent = self.encoder.forward_masked(images, mask.ids_keep)  # [V*B, 1+K, D]
        pred = self.decoder(latent, mask.ids_restore).float()  # [V*B, N, D_t]
        loss_masked = masked_mean((pred - target).pow(2).mean(-1), mask.mask)
        visible_pred = self.projector(latent[:, 1:]).float()  # [V*B, K, D_t]
        visible_target = gather_tokens(target, mask.ids_keep)
        loss_visible = F.smooth_l1_loss(visible_pred, visible_target, beta=self.beta)
        loss = loss_masked + self.visible_weight * loss_visible
        return {"loss": loss, "logs": {"dmjd/loss_masked": loss_masked.detach(),
                                       "dmjd/loss_visible": loss_visible.detach(),
                                       "dmjd/token_coverage": views.coverage().mean()}}


def build_dmjd(encoder: MaskedViT, target: nn.Module, *, mask_ratio: float, views: int, unit: int,
               visible_weight: float, beta: float, decoder_dim: int, decoder_depth: int, decoder_heads: int,
               lr_per_mask_ratio: bool, mask_count: MaskCount) -> DMJD:
    decoder = MaeDecoder(encoder.grid, encoder.embed_dim, target.dim, decoder_dim, decoder_depth, decoder_heads,
                         norm_eps=encoder.spec.norm_eps)
    init_mae_weights(decoder)
    return DMJD(encoder, decoder, target, mask_ratio=mask_ratio, views=views, unit=unit,
                visible_weight=visible_weight, beta=beta, lr_per_mask_ratio=lr_per_mask_ratio, mask_count=mask_count)
