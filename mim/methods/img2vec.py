"""Img2Vec (Pan et al., 2023): MAE's visible-token encoder and light decoder, regressing a frozen teacher's
deep features of the masked tokens instead of their pixels.

    images [B, C, H, W] -> random mask (1 = masked) -> encoder on visible tokens [B, 1+K, D]
    -> decoder with mask tokens [B, N, C_t]
    -> target: teacher features on the student's grid [B, N, C_t] (no grad; bf16 under the trainer's autocast)
    -> SmoothL1(beta) or MSE, averaged over masked tokens.
With `teacher_cache`, the teacher's features of each training image are computed once (`prepare_data`) and
looked up by the batch's dataset indices and flips, when the augmentation keeps whole images.
The teacher is a submodule (it follows `.to(device)`) that stays frozen and in eval mode; only `encoder` is
exported.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F

from mim.analysis.pca import feature_panels
from mim.data.augment import BatchAugment
from mim.masking import MaskCount, masked_mean
from mim.methods.mae import MAE
from mim.models.decoder import MaeDecoder
from mim.models.vit import MaskedViT, init_mae_weights
from mim.targets import patchify, unpatchify
from mim.targets.feature_cache import FeatureCache, cache_blocker
from mim.targets.teacher import Teacher

log = logging.getLogger("mim.img2vec")


class Img2Vec(MAE):
    name = "img2vec"

    def __init__(self, encoder: MaskedViT, decoder: MaeDecoder, teacher: Teacher, *, mask_ratio: float,
                 loss: Literal["smooth_l1", "mse"], beta: float, teacher_cache: Literal["auto", "always", "never"],
                 teacher_cache_mb: int, mask_count: MaskCount) -> None:
        super().__init__(encoder, decoder, mask_ratio, norm_pix_loss=False, target=None, views=1, mask_count=mask_count)
        if tuple(teacher.grid) != tuple(encoder.grid):
            raise ValueError(f"teacher features are on a {list(teacher.grid)} grid, the encoder's tokens on "
                             f"{list(encoder.grid)}: build the teacher for the model's patch size")
        self.teacher, self.loss, self.beta = teacher, loss, beta
        self.teacher_cache, self.teacher_cache_mb = teacher_cache, teacher_cache_mb
        self.cache: FeatureCache | None = None  # not a buffer: rebuilt from the data, never checkpointed

    def prepare_data(self, images: torch.Tensor, augment: BatchAugment, device: torch.device) -> None:
        """Build the teacher-feature cache when `teacher_cache` allows it (`always`: or say why it can't)."""
        self.cache = None
        if self.teacher_cache == "never":
            return
        blocker = cache_blocker(augment)
        if blocker is None and self.teacher_cache == "auto":
            flips, tokens = augment.hflip_prob > 0, self.encoder.num_patches
            size = FeatureCache.size_bytes(len(images), flips, tokens, self.teacher.dim)  # .dim runs the teacher once
            if size > self.teacher_cache_mb * 2**20:
                blocker = f"it would take {size / 2**20:.0f} MiB, over method.teacher_cache_mb {self.teacher_cache_mb}"
        if blocker is not None:
            if self.teacher_cache == "always":
                raise ValueError(f"method.teacher_cache is 'always', but {blocker}")
            log.info("teacher features computed every step: %s", blocker)
            return
        self.cache = FeatureCache.build(self.teacher, images, augment, device=device, log=log.info)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)  # [B, N, C_t], no gradient

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, N, C] prediction and target -> [B, N] loss per token."""
        if self.loss == "mse":
            return (pred.float() - target.float()).pow(2).mean(-1)
        return F.smooth_l1_loss(pred.float(), target.float(), beta=self.beta, reduction="none").mean(-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        images, mask = batch["images"], batch["mask"]
        if self.cache is not None and "indices" in batch:
            target = self.cache.lookup(batch["indices"], batch["flip"]).to(images.device)
        else:
            target = self.target(images)
        pred = self.predict(images, mask)
        loss = masked_mean(self.per_token_loss(pred, target), mask.mask)
        cos = masked_mean(F.cosine_similarity(pred.float(), target, dim=-1), mask.mask)
        return {"loss": loss, "logs": {"loss_feature": loss.detach(), "feature_cos": cos.detach()}}

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The masked input and the teacher's / predicted features as pictures: both projected on the teacher
        features' top-3 principal components (shared), shown as RGB."""
        images, mask = batch["images"], batch["mask"]
        target, pred = self.target(images), self.predict(images, mask).float()
        p, grid, c = self.encoder.patch_size, self.encoder.grid, images.shape[1]
        keep = (1 - mask.mask).unsqueeze(-1)
        panels = feature_panels(target, pred, images)
        return {"input": unpatchify(patchify(images, p) * keep, p, grid, c),
                "teacher features": panels["target"], "prediction": panels["prediction"]}


def build_img2vec(encoder: MaskedViT, teacher: Teacher, *, mask_ratio: float, loss: str, beta: float,
                  decoder_dim: int, decoder_depth: int, decoder_heads: int, teacher_cache: str,
                  teacher_cache_mb: int, mask_count: MaskCount) -> Img2Vec:
    """Img2Vec around `encoder` with a decoder predicting the teacher's feature width per token."""
    decoder = MaeDecoder(encoder.grid, encoder.embed_dim, teacher.dim, decoder_dim, decoder_depth, decoder_heads,
                         norm_eps=encoder.spec.norm_eps)
    init_mae_weights(decoder)
    return Img2Vec(encoder, decoder, teacher, mask_ratio=mask_ratio, loss=loss, beta=beta,
                   teacher_cache=teacher_cache, teacher_cache_mb=teacher_cache_mb, mask_count=mask_count)
