"""CIM (Fang et al., 2023): corrupted image modeling. A small generator fills masked patches with plausible
alternatives; an enhancer of any architecture (ViT over all tokens, or a CNN) sees the corrupted image and
either tells for every token whether it was replaced (RevDet) or recovers every original pixel (ResPix).

    images [B, C, H, W] -> raw pixels [0, 1] -> patch vectors -> ids = nearest centroid [B, N]
    -> BEiT block mask (1 = masked) -> generator: small ViT with mask tokens -> logits [B, N, K]; L_gen = CE on masked
    -> sample ids ~ softmax(logits / T) at masked positions (torch.multinomial, no gradient)
    -> corrupted image: the sampled token map decoded through the codebook, every patch (decode_all, the paper's:
       visible patches become their own centroid) or only the masked ones (visible patches keep their pixels)
    -> enhancer on the corrupted image -> token features [B, N, D]
       RevDet: BCE per token, label 1 where the sampled id differs from the original id
       ResPix: all pixels against sliding-window-normalized targets (MSE)
    -> loss = L_gen + enhancer_weight * L_enh (the enhancer's loss never reaches the generator).
The authors' generator predicts a frozen dVAE's tokens; here it predicts the centroid tokenizer's ids (CCViT's
tokenizer stage), whose decoder is a table lookup. Only `encoder` (the enhancer) is exported.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mim.masking import TokenMask, block_masking, count_for_ratio, masked_mean
from mim.methods.base import MIMMethod, StepOutput
from mim.models.encoder import Encoder
from mim.models.vit import MaskedViT, init_mae_weights
from mim.targets import from_patch_vectors, patch_vectors, sliding_window_normalize
from mim.targets.centroids import CentroidTokenizer, nearest_centroid
from mim.targets.pixels import sliding_window_stats


def sample_replacements(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, N, K] generator logits, [B, N] original ids and mask (1 = masked) -> [B, N] ids: a sample from
    softmax(logits / temperature) at masked positions, the original id elsewhere. No gradient."""
    with torch.no_grad():
        where = mask.bool()
        probs = torch.softmax(logits[where].float() / temperature, dim=-1)  # [M, K]
        out = ids.clone()
        if probs.numel():
            out[where] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return out


def replacement_labels(original: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """RevDet's targets [B, N] float: 1 where a token's id was changed (a sample equal to the original is not
    a replacement)."""
    return (sampled != original).float()


class CIM(MIMMethod):
    name = "cim"

    def __init__(self, encoder: Encoder, generator: MaskedViT, tokenizer: CentroidTokenizer, *,
                 mean: tuple[float, ...], std: tuple[float, ...], patch_size: int,
                 objective: Literal["revdet", "respix"], mask_ratio: float, min_block: int,
                 temperature: float, decode_all: bool, window: int,
                 enhancer_weight: float, generator_lr_scale: float,
                 generator_weight_decay: float | None) -> None:
        super().__init__()
        c = generator.spec.in_chans
        if generator.patch_size != patch_size:
            raise ValueError(f"the generator uses {generator.patch_size}-px patches, the enhancer {patch_size}-px")
        tokenizer.check_fits(patch_size, c)
        self.encoder, self.generator, self.tokenizer = encoder, generator, tokenizer
        self.patch_size, self.grid = patch_size, generator.grid
        self.register_buffer("centroids", tokenizer.centroids.clone(), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.objective, self.temperature, self.decode_all = objective, temperature, decode_all
        self.window, self.enhancer_weight, self.min_block = window, enhancer_weight, min_block
        self.generator_optim = {"lr_scale": generator_lr_scale, "weight_decay": generator_weight_decay}
        self.num_masked = count_for_ratio(generator.num_patches, mask_ratio)
        g = generator.embed_dim
        self.gen_mask_token = nn.Parameter(torch.zeros(1, 1, g))
        self.gen_head = nn.Linear(g, tokenizer.k)
        d = encoder.embed_dim
        self.enh_head = nn.Linear(d, 1 if objective == "revdet" else patch_size * patch_size * c)
        init_mae_weights(nn.ModuleList([self.gen_head, self.enh_head]))
        nn.init.normal_(self.gen_mask_token, std=0.02)

    def optimizer_overrides(self) -> dict[str | tuple[str, ...], dict[str, float | None]]:
        """The generator (its ViT, mask token and id head) with its own lr scale and weight decay."""
        return {("generator.", "gen_mask_token", "gen_head."): self.generator_optim}

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> TokenMask:
        return block_masking(batch_size, self.grid, self.num_masked, generator, min_block=self.min_block)

    def _raw(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.std + self.mean

    def _normalized(self, vectors: torch.Tensor, channels: int) -> torch.Tensor:
        return (from_patch_vectors(vectors, self.patch_size, self.grid, channels) - self.mean) / self.std

    def generate(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Generator logits [B, N, K] over centroid ids for block-masked images."""
        tokens = self.generator.embed_with_mask_token(images, mask, self.gen_mask_token)
        return self.gen_head(self.generator.forward_embedded(tokens)[:, 1:])

    def corrupt(self, images: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Original ids, sampled ids, replacement labels and the corrupted (normalized) images; no gradient."""
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            pixels = patch_vectors(self._raw(images), self.patch_size)  # [B, N, C*p*p] in [0, 1]
            ids = nearest_centroid(pixels.flatten(0, 1), self.centroids).view(pixels.shape[:-1])
            sampled = sample_replacements(logits.detach(), ids, mask, self.temperature)
            decoded = self.centroids[sampled]
            if not self.decode_all:
                decoded = torch.where(mask.bool().unsqueeze(-1), decoded, pixels)
            corrupted = self._normalized(decoded, images.shape[1])
        return {"ids": ids, "sampled": sampled, "replaced": replacement_labels(ids, sampled), "corrupted": corrupted,
                "pixels": pixels}

    def enhance(self, corrupted: torch.Tensor) -> torch.Tensor:
        """Enhancer token features [B, N, D] of corrupted images on the tokenizer's grid: every token, no mask
        token (a ViT's own patch grid; a CNN's final map pooled or resized to it)."""
        return self.encoder.forward_tokens(corrupted, grid=self.grid)

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        images, mask = batch["images"], batch["mask"].mask
        logits = self.generate(images, mask)
        c = self.corrupt(images, mask, logits)
        gen_loss = masked_mean(F.cross_entropy(logits.float().transpose(1, 2), c["ids"], reduction="none"), mask)
        gen_acc = masked_mean((logits.argmax(-1) == c["ids"]).float(), mask)
        out = self.enh_head(self.enhance(c["corrupted"])).float()
        logs = {"loss_gen": gen_loss.detach(), "cim/gen_acc": gen_acc, "cim/replaced_fraction": c["replaced"].mean()}
        if self.objective == "revdet":
            scores = out.squeeze(-1)  # [B, N]
            enh_loss = F.binary_cross_entropy_with_logits(scores, c["replaced"])
            logs["cim/revdet_acc"] = ((scores > 0).float() == c["replaced"]).float().mean()
        else:
            pred = from_patch_vectors(out, self.patch_size, self.grid, images.shape[1])  # [B, C, H, W]
            enh_loss = (pred - sliding_window_normalize(self._raw(images), self.window)).pow(2).mean()
        logs["loss_enh"] = enh_loss.detach()
        return {"loss": gen_loss + self.enhancer_weight * enh_loss, "logs": logs}

    def picture_note(self) -> str:
        if self.objective == "revdet":
            return ""
        return (f"prediction de-normalized with the true mean/std of each pixel's {self.window}x{self.window} window "
                "(ResPix predicts locally normalized pixels)")

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The corrupted input, which patches were replaced, and the enhancer's answer: the detected patches
        (RevDet) or the recovered image (ResPix)."""
        images, mask = batch["images"], batch["mask"].mask
        c = self.corrupt(images, mask, self.generate(images, mask))
        out = self.enh_head(self.enhance(c["corrupted"])).float()
        channels = images.shape[1]
        corrupted_px = patch_vectors(self._raw(c["corrupted"]), self.patch_size)
        dim = lambda flags: self._normalized(corrupted_px * (0.25 + 0.75 * flags.unsqueeze(-1)), channels)  # noqa
        panels = {"input": c["corrupted"], "replaced": dim(c["replaced"])}
        if self.objective == "revdet":
            panels["detected"] = dim((out.squeeze(-1) > 0).float())
        else:
            raw = self._raw(images)
            pred = from_patch_vectors(out, self.patch_size, self.grid, channels)
            local, var = sliding_window_stats(raw, self.window)
            recovered = pred * (var + 1e-6).sqrt() + local  # undo the target's normalization
            panels["prediction"] = (recovered.clamp(0, 1) - self.mean) / self.std
        return panels


def build_cim(encoder: Encoder, generator: MaskedViT, tokenizer: CentroidTokenizer,
              **kwargs: Any) -> CIM:
    return CIM(encoder, generator, tokenizer, **kwargs)
