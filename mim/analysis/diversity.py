"""Token diversity (Img2Vec): how dissimilar the tokens of one image are.

For an image's N token features f_1..f_N, TD = 1 - mean over ordered pairs i != j of cos(f_i, f_j).
TD is 0 when every token is the same direction, 1 when tokens are mutually orthogonal (it can exceed 1
when tokens point in opposite directions), and it ignores each token's scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def token_diversity(tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[B, N, C] token features -> [B] token diversity per image (N >= 2)."""
    if tokens.ndim != 3 or tokens.shape[1] < 2:
        raise ValueError(f"token diversity needs [B, N >= 2, C] features, got {list(tokens.shape)}")
    unit = F.normalize(tokens.float(), dim=-1, eps=eps)  # [B, N, C]
    n = unit.shape[1]
    total = unit.sum(dim=1)  # [B, C]; sum_ij cos = ||sum_i u_i||^2, and the diagonal adds N
    off_diagonal = (total * total).sum(-1) - (unit * unit).sum((-1, -2))
    return 1 - off_diagonal / (n * (n - 1))


def diversity_summary(values: torch.Tensor) -> dict[str, float]:
    """Mean and spread of per-image token diversity over a held-out set."""
    v = values.double()
    return {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "images": len(v)}


def diversity_by_level(levels_of: Callable[[torch.Tensor], list[torch.Tensor]], images: torch.Tensor,
                       batch_size: int = 64) -> list[dict[str, float]]:
    """Token-diversity summaries of every feature level: `levels_of(batch)` gives [B, N, C_l] per level
    (e.g. `Teacher.levels`), applied to `images` in batches."""
    per_level: list[list[torch.Tensor]] = []
    for part in images.split(batch_size):
        for i, feats in enumerate(levels_of(part)):
            if i == len(per_level):
                per_level.append([])
            per_level[i].append(token_diversity(feats))
    return [diversity_summary(torch.cat(values)) for values in per_level]
