"""One contract for the library's three encoders, so callers (evaluation, fine-tuning, export, CIM, reports) never
branch on the class.

| member                  | `MaskedViT`                   | `HierEncoder`                | `CnnEncoder`                |
|-------------------------|-------------------------------|------------------------------|-----------------------------|
| `grid`                  | patch grid                    | last stage's grid            | final map at `img_size`     |
| `forward_tokens(x)`     | patch tokens (no class token) | last-stage tokens            | final map, flattened        |
| `pooled(x, pool)`       | class token or mean token     | mean token                   | global average              |
| `forward_intermediates` | timm's, a map per block       | a map per stage              | timm's, a map per stage     |
| `layer_ids()`           | block i -> i + 1              | blocks across stages         | `layer{k}` -> k             |
| `export_state()`        | timm keys without `head.`     | own keys                     | the timm body's keys        |

A masked forward is not part of the contract, because each method corrupts its encoder in its own way:
- ViT only: `forward_masked(x, ids_keep)` encodes the visible tokens alone (MAE), `embed_with_mask_token` +
  `forward_embedded` put mask tokens inside the encoder (SimMIM, CCViT, CIM's generator).
- hierarchical: `forward_stages(x, source)` / `forward_tokens(x, source)` mix two images by a source map on the
  last grid and keep attention inside each source (MixMIM).
- CNN: none; CIM feeds it whole corrupted images through `forward_tokens`.
"""

from __future__ import annotations

from typing import Literal, Protocol, Self, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class EncoderSpec(Protocol):
    """The frozen dataclass an encoder is built from; saved beside every checkpoint and export."""

    img_size: int
    in_chans: int

    @property
    def arch(self) -> str:
        """The architecture ("vit", "cnn" or "hier"): the key `mim.models.export.load_encoder` rebuilds it by."""
        ...

    @property
    def timm_name(self) -> str:
        """The timm model name whose weights layout the export uses ("" for an architecture of our own)."""
        ...

    def timm_kwargs(self) -> dict:
        """Keyword arguments for `timm.create_model(timm_name, **kwargs)` giving the same architecture."""
        ...

    def to_dict(self) -> dict:
        """JSON-able fields."""
        ...

    @classmethod
    def from_dict(cls, fields: dict) -> Self:
        """The spec `to_dict` gave, also after a JSON round trip."""
        ...

    def build(self) -> Encoder:
        """A randomly initialised encoder of this architecture (the initialisation pre-training starts from)."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """What every encoder offers (see the module docstring for how each one implements it). All are `nn.Module`s."""

    spec: EncoderSpec
    embed_dim: int  # D of `forward_tokens` and `pooled`

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the final token grid at `spec.img_size`: `forward_tokens` gives rows * cols tokens."""
        ...

    @property
    def patch_size(self) -> int:
        """Image pixels per side of one final token (the unit of masks and pixel targets)."""
        ...

    def forward_tokens(self, x: torch.Tensor, *, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """[B, C, H, W] images -> [B, N, D] last-layer token features in row-major grid order, on the encoder's own
        grid, or brought to `grid` (area-pooled when finer, bilinearly resized when coarser) for per-token heads."""
        ...

    def pooled(self, x: torch.Tensor, pool: Literal["cls", "mean"] = "mean") -> torch.Tensor:
        """[B, C, H, W] -> [B, D] image features: the class token ("cls", ViT only; the others have none and give
        the mean) or the mean of `forward_tokens`. A ViT's default is "cls"."""
        ...

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, *,
                              intermediates_only: bool = True) -> list[torch.Tensor]:
        """timm-style [B, C_i, h_i, w_i] maps of the chosen blocks or stages (an int n: the last n; None: all).
        Pass `intermediates_only=True` by keyword: timm's ViT defaults to False and then returns a tuple."""
        ...

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """({parameter name: depth}, top) for layer-wise lr decay: the stem 0, the blocks or stages 1..top-1 in
        order, the final norm and any head top (= number of blocks or stages + 1)."""
        ...

    def export_state(self) -> dict[str, torch.Tensor]:
        """Weights under timm's keys (without a classifier), detached, contiguous, on the CPU."""
        ...

    def load_export_state(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Load what `export_state` gave (strict; the error names `origin` and the keys that do not fit)."""
        ...


def cpu_state(state: dict[str, torch.Tensor], drop_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies of `state`, without the keys starting with `drop_prefix`."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()
            if drop_prefix is None or not k.startswith(drop_prefix)}


def map_to_tokens(maps: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """[B, D, h, w] -> [B, N, D] tokens in row-major order, on the map's own grid or brought to `grid`: area-pooled
    where the map is at least as fine, bilinearly resized where it is coarser."""
    if grid is not None and tuple(maps.shape[-2:]) != tuple(grid):
        if maps.shape[-2] >= grid[0] and maps.shape[-1] >= grid[1]:
            maps = F.adaptive_avg_pool2d(maps, grid)
        else:
            maps = F.interpolate(maps, size=grid, mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2)
