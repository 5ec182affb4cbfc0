"""Img2Vec (Pan et al., 2023): MAE's visible-token encoder and light decoder, regressing a frozen teacher's
deep features of the masked tokens instead of their pixels.

    images [B, C, H, W] -> random mask (1 = masked) -> encoder on visible tokens [B, 1+K, D]
    -> decoder with mask tokens [B, N, C_t]
    -> target: teacher features on the student's grid [B, N, C_t] (no grad; bf16 under the trainer's autocast)
    -> SmoothL1(beta) or MSE, averaged over masked tokens.
The teacher is a submodule (it follows `.to(device)`) that stays frozen and in eval mode; only `encoder` is
exported.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from mim.analysis.pca import feature_panels
from mim.masking import masked_mean
from mim.methods.mae import MAE
from mim.models.decoder import MaeDecoder
from mim.models.vit import MaskedViT, init_mae_weights
from mim.targets import patchify, unpatchify
from mim.targets.teacher import Teacher


class Img2Vec(MAE):
    name = "img2vec"

    def __init__(self, encoder: MaskedViT, decoder: MaeDecoder, teacher: Teacher, *, mask_ratio: float = 0.75,
                 loss: Literal["smooth_l1", "mse"] = "smooth_l1", beta: float = 1.0) -> None:
        super().__init__(encoder, decoder, mask_ratio, norm_pix_loss=False)
        if tuple(teacher.grid) != tuple(encoder.grid):
            raise ValueError(f"teacher features are on a {list(teacher.grid)} grid, the encoder's tokens on "
                             f"{list(encoder.grid)}: build the teacher for the model's patch size")
        self.teacher, self.loss, self.beta = teacher, loss, beta

    def target(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)  # [B, N, C_t], no gradient

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, N, C] prediction and target -> [B, N] loss per token."""
        if self.loss == "mse":
            return (pred.float() - target.float()).pow(2).mean(-1)
        return F.smooth_l1_loss(pred.float(), target.float(), beta=self.beta, reduction="none").mean(-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        images, mask = batch["images"], batch["mask"]
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


def build_img2vec(encoder: MaskedViT, teacher: Teacher, *, mask_ratio: float = 0.75, loss: str = "smooth_l1",
                  beta: float = 1.0, decoder_dim: int = 64, decoder_depth: int = 1, decoder_heads: int = 2) -> Img2Vec:
    """Img2Vec around `encoder` with a decoder predicting the teacher's feature width per token."""
    decoder = MaeDecoder(encoder.grid, encoder.embed_dim, teacher.dim, decoder_dim, decoder_depth, decoder_heads,
                         norm_eps=encoder.spec.norm_eps)
    init_mae_weights(decoder)
    return Img2Vec(encoder, decoder, teacher, mask_ratio=mask_ratio, loss=loss, beta=beta)
