"""CNN encoders (any timm ResNet, or other timm CNN) for methods whose corruption needs no mask token (CIM).

`CnnEncoder` holds a timm model without its classifier as `body`, so an exported state dict loads into
`timm.create_model(spec.name, num_classes=0, **spec.kwargs)` unchanged. Small images can be resized up
before the stem (`input_size`) and the network dilated (`output_stride` 8 or 16) so its final map is not
1x1; `forward_tokens(x, grid=...)` brings that map to a ViT-like token grid for per-token heads. It implements
the `mim.models.encoder.Encoder` contract; it has no masked forward (CIM corrupts whole images).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from torch import nn

from mim.models.encoder import cpu_state, map_to_tokens
from mim.models.state import load_state_strict
from mim.models.timm_args import check_timm_args


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

    def __post_init__(self) -> None:
        check_timm_args(self.name, self.kwargs)

    @property
    def timm_name(self) -> str:
        return self.name

    def timm_kwargs(self) -> dict:
        """Keyword arguments for `timm.create_model(self.timm_name, num_classes=0, **kwargs)`."""
        return {"in_chans": self.in_chans, "output_stride": self.output_stride, **self.kwargs}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> CnnSpec:
        return cls(**fields)

    def build(self) -> CnnEncoder:
        """A randomly initialised encoder (timm's own init)."""
        return CnnEncoder(self)


class CnnEncoder(nn.Module):
    """A timm CNN as an encoder: `forward_map` [B, C, h, w], `forward_tokens` [B, N, C], `pooled` [B, C]."""

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

    @property
    def grid(self) -> tuple[int, int]:
        """The final map's (rows, cols) at `spec.img_size`: ceil(input / stride), as timm's padded strided
        convolutions give."""
        size = self.spec.input_size or self.spec.img_size
        g = math.ceil(size / self._stride())
        return (g, g)

    @property
    def patch_size(self) -> int:
        """Image pixels per side of one final-map token (rounded down where the map overhangs the image)."""
        return max(1, self.spec.img_size // self.grid[0])

    def _stride(self) -> int:
        info = getattr(self.body, "feature_info", None)
        return int(info[-1]["reduction"]) if info else self.spec.output_stride

    def forward_tokens(self, x: torch.Tensor, *, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, D]: the final map flattened on its own grid, or area-pooled / bilinearly resized
        to `grid` (CIM's per-token heads on the tokenizer's grid)."""
        return map_to_tokens(self.forward_map(x), grid)

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

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """Layer-decay depths (timm ResNets): the stem 0; `layer{k}` -> k; anything after the last stage L + 1."""
        names = [n for n, _ in self.named_parameters()]
        stages = sorted({int(m[1]) for n in names if (m := re.match(r"body\.layer(\d+)\.", n))})
        top = (max(stages) if stages else 0) + 1

        def depth(name: str) -> int:
            if m := re.match(r"body\.layer(\d+)\.", name):
                return int(m[1])
            return 0 if name.startswith(("body.conv1", "body.bn1", "body.stem")) else top

        return {n: depth(n) for n in names}, top

    def export_state(self) -> dict[str, torch.Tensor]:
        """The timm body's keys (it was built without a classifier)."""
        return cpu_state(self.body.state_dict())

    def load_export_state(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Strictly load an exported state into the timm body."""
        load_state_strict(self.body, state, origin)


def build_cnn(spec: CnnSpec) -> CnnEncoder:
    """A randomly initialised CNN encoder (timm's own init)."""
    return CnnEncoder(spec)
