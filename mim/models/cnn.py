"""CNN encoders (any timm ResNet, or other timm CNN) for methods whose corruption needs no mask token (CIM).

`CnnEncoder` holds a timm model without its classifier as `body`, so an exported state dict loads into
`timm.create_model(spec.name, num_classes=0, **spec.kwargs)` unchanged. Small images can be resized up
before the stem (`input_size`) and the network dilated (`output_stride` 8 or 16) so its final map is not
1x1; `tokens(x, grid)` brings that map to a ViT-like token grid for per-token heads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CnnSpec:
    """Everything needed to rebuild a CNN encoder: saved beside every checkpoint and export."""

    name: str = "resnet18"
    img_size: int = 28
    in_chans: int = 3
    input_size: int | None = None  # resize to this before the stem (None = img_size)
    output_stride: int = 32
    kwargs: dict = field(default_factory=dict)  # more timm.create_model arguments (channels, stem_width, ...)
    drop_path: float = 0.0
    arch: str = "cnn"

    @property
    def timm_name(self) -> str:
        return self.name

    def timm_kwargs(self) -> dict:
        """Keyword arguments for `timm.create_model(self.timm_name, num_classes=0, **kwargs)`."""
        return {"in_chans": self.in_chans, "output_stride": self.output_stride, **self.kwargs}

    def to_dict(self) -> dict:
        return asdict(self)


class CnnEncoder(nn.Module):
    """A timm CNN as an encoder: `forward_map` [B, C, h, w], `tokens` on a grid, `pooled` [B, C]."""

    def __init__(self, spec: CnnSpec) -> None:
        super().__init__()
        self.spec = spec
        try:
            self.body = timm.create_model(spec.name, pretrained=False, num_classes=0, global_pool="",
                                          drop_path_rate=spec.drop_path, **spec.timm_kwargs())
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"model.name {spec.name!r} with {spec.timm_kwargs()}: timm cannot build it "
                             f"({err})") from None
        self.embed_dim = self.body.num_features

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] normalized images -> the final feature map [B, D, h, w]."""
        size = self.spec.input_size
        if size and size != x.shape[-1]:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.body.forward_features(x.contiguous(memory_format=torch.channels_last))

    def tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, D] features on a token grid (area-pooled or bilinearly resized map)."""
        feats = self.forward_map(x)
        if feats.shape[-2] >= grid[0] and feats.shape[-1] >= grid[1]:
            feats = F.adaptive_avg_pool2d(feats, grid)
        else:
            feats = F.interpolate(feats, size=grid, mode="bilinear", align_corners=False)
        return feats.flatten(2).transpose(1, 2)

    def pooled(self, x: torch.Tensor, pool: Literal["cls", "mean"] = "mean") -> torch.Tensor:
        """A [B, D] image feature: the global average of the final map (a CNN has no class token)."""
        return self.forward_map(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              intermediates_only: bool = True) -> list[torch.Tensor]:
        """timm's per-stage feature maps (for teachers and token-diversity analysis), after the input resize."""
        size = self.spec.input_size
        if size and size != x.shape[-1]:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.body.forward_intermediates(x, indices=indices, intermediates_only=intermediates_only)


def build_cnn(spec: CnnSpec) -> CnnEncoder:
    """A randomly initialised CNN encoder (timm's own init)."""
    return CnnEncoder(spec)
