"""A hierarchical (Swin-like) encoder whose attention can be restricted to tokens of the same source image,
for MixMIM: every stage attends inside non-overlapping windows (no shift), stages are joined by 2x2 patch
merging, and an absolute sin-cos position embedding is added after the patch embedding.

    images [B, C, H, W] -> patch embedding (stride p) [B, H/p, W/p, D]
    -> (optional) mix: x * (1 - m) + x.flip(0) * m, with m the source map upsampled to this grid
    -> + sin-cos position embedding
    -> stage s: blocks over windows of `window_sizes[s]` tokens a side, each block adding its learned relative
       position bias to the attention logits (Swin's and MixMIM's: a (2W-1)^2 x heads table indexed by the
       query-key offset); with a source map, a token attends only to tokens of the same source inside its
       window (the bias is -inf elsewhere; a token always sees itself, so no row is empty and bf16/fp16 stay
       finite)
    -> 2x2 patch merging (concat, LayerNorm, Linear 4D -> 2D) between stages
    -> final LayerNorm; tokens on the last grid (stride p * 2^(S-1)).

Source maps are defined on the *last* grid and upsampled (nearest) to every stage, so a 2x2 merge never
blends two images. Without a source map it is a plain hierarchical encoder for fine-tuning and probes; it
implements the `mim.models.encoder.Encoder` contract (the source map is its own masked forward).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Literal

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from mim.models.attention import SplitQkvAttention
from mim.models.encoder import cpu_state, map_to_tokens
from mim.models.pos_embed import sincos_2d
from mim.models.state import load_state_strict

# size -> (embed_dim, depths, num_heads, window_sizes at 224 px with patch 4)
HIER_PRESETS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "micro": (64, (1, 2), (2, 4), (7, 7)),  # CPU-sized: 28 px, patch 2 -> 14x14 (4 windows) -> 7x7
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), (14, 14, 14, 7)),  # MixMIM-B
}


@dataclass(frozen=True)
class HierSpec:
    """Everything needed to rebuild the encoder: saved beside every checkpoint and export."""

    size: Literal["micro", "base"] = "micro"
    img_size: int = 28
    patch_size: int = 2
    in_chans: int = 3
    embed_dim: int | None = None
    depths: tuple[int, ...] | None = None
    num_heads: tuple[int, ...] | None = None
    window_sizes: tuple[int, ...] | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    norm_eps: float = 1e-6
    rel_pos_bias: bool = True
    arch: str = field(default="hier")

    def resolved(self) -> dict:
        d, depths, heads, windows = HIER_PRESETS[self.size]
        return {"embed_dim": self.embed_dim or d, "depths": tuple(self.depths or depths),
                "num_heads": tuple(self.num_heads or heads), "window_sizes": tuple(self.window_sizes or windows)}

    @property
    def timm_name(self) -> str:
        return ""  # our own architecture: rebuild with mim.models.export.load_encoder

    def timm_kwargs(self) -> dict:
        return {}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> HierSpec:
        """The inverse of `to_dict` after a JSON round trip (lists back to tuples). A spec without
        `rel_pos_bias` was written before the field existed, by an encoder without the bias."""
        fields = {"rel_pos_bias": False, **fields}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def build(self) -> HierEncoder:
        """A randomly initialised encoder (truncated-normal linears)."""
        return HierEncoder(self)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, ws*ws, C], windows row-major within each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nW, ws*ws, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def upsample_source(source: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A [..., h, w] source map (1 = the partner image) -> nearest-upsampled to `grid` (an integer multiple)."""
    h, w = source.shape[-2:]
    if grid[0] % h or grid[1] % w:
        raise ValueError(f"a source map on a {h}x{w} grid does not tile the {grid[0]}x{grid[1]} grid")
    return source.repeat_interleave(grid[0] // h, -2).repeat_interleave(grid[1] // w, -1)


def same_source_mask(source: torch.Tensor, ws: int) -> torch.Tensor:
    """[H, W] source map -> [nW, 1, L, L] bool: True where query and key come from the same image."""
    ids = window_partition(source[None, :, :, None].float(), ws).squeeze(-1)  # [nW, L]
    return (ids[:, :, None] == ids[:, None, :]).unsqueeze(1)


def relative_position_index(ws: int) -> torch.Tensor:
    """[L, L] (L = ws*ws, row-major tokens) index into a (2ws-1)^2 table of offsets: for query (yq, xq) and key
    (yk, xk), (yq - yk + ws - 1) * (2ws - 1) + (xq - xk + ws - 1). Equal offsets share an entry (Swin's)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # [2, L]
    offset = coords[:, :, None] - coords[:, None, :] + ws - 1  # [2, L, L], each in [0, 2ws-2]
    return offset[0] * (2 * ws - 1) + offset[1]


class WindowBlock(Block):
    """timm's pre-norm block over windows of `window` x `window` tokens, with (when `rel_pos_bias`) a learned
    relative position bias [(2W-1)^2, heads] added to the attention logits, trunc-normal(0.02) initialised as in
    Swin and MixMIM. A boolean `attn_mask` (same-source) becomes -inf outside it."""

    def __init__(self, dim: int, heads: int, window: int, rel_pos_bias: bool, **kwargs) -> None:
        super().__init__(dim, heads, attn_layer=SplitQkvAttention, **kwargs)
        self.relative_position_bias_table = None
        if rel_pos_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def attention_bias(self, same_source: torch.Tensor | None) -> torch.Tensor | None:
        """The SDPA mask: [1, H, L, L] bias (or, with a [B', 1, L, L] boolean mask, [B', H, L, L] with -inf where
        it is False); the boolean mask itself without a bias table."""
        if self.relative_position_bias_table is None:
            return same_source
        bias = self.relative_position_bias_table[self.relative_position_index]  # [L, L, H]
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # [1, H, L, L]
        return bias if same_source is None else bias.masked_fill(~same_source, float("-inf"))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        return super().forward(x, attn_mask=self.attention_bias(attn_mask), is_causal=is_causal)


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one token of twice the width (Swin's merge)."""

    def __init__(self, dim: int, norm_eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"patch merging needs an even grid, got {h}x{w}")
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class HierStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, drop_path: list[float],
                 norm_eps: float, rel_pos_bias: bool) -> None:
        super().__init__()
        self.window = window
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList(WindowBlock(dim, heads, window, rel_pos_bias, mlp_ratio=mlp_ratio, qkv_bias=True,
                                                norm_layer=norm, drop_path=dp) for dp in drop_path)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        """[B, H, W, C] tokens, an optional [H, W] source map -> [B, H, W, C]."""
        b, h, w, _ = x.shape
        ws = self.window
        if h % ws or w % ws:
            raise ValueError(f"window size {ws} does not tile the {h}x{w} grid: set model.window_sizes")
        windows = window_partition(x, ws)  # [B*nW, L, C]
        mask = None
        if source is not None:
            m = same_source_mask(source, ws)  # [nW, 1, L, L]
            mask = m.unsqueeze(0).expand(b, *m.shape).reshape(-1, *m.shape[1:])  # [B*nW, 1, L, L]
        for block in self.blocks:
            windows = block(windows, attn_mask=mask)
        return window_reverse(windows, ws, h, w)


class HierEncoder(nn.Module):
    """See the module docstring. `forward_stages` gives every stage's map; `pooled` the mean final token."""

    def __init__(self, spec: HierSpec) -> None:
        super().__init__()
        r = spec.resolved()
        depths, heads, windows = r["depths"], r["num_heads"], r["window_sizes"]
        if not len(depths) == len(heads) == len(windows):
            raise ValueError(f"depths {depths}, num_heads {heads} and window_sizes {windows} differ in length")
        if spec.img_size % (spec.patch_size * 2 ** (len(depths) - 1)):
            raise ValueError(f"img_size {spec.img_size} is not divisible by the final stride "
                             f"{spec.patch_size * 2 ** (len(depths) - 1)} (patch_size x 2^(stages - 1))")
        self.spec = spec
        d = r["embed_dim"]
        self.patch_embed = nn.Conv2d(spec.in_chans, d, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.embed_norm = nn.LayerNorm(d, eps=spec.norm_eps)
        g = spec.img_size // spec.patch_size
        self.register_buffer("pos_embed", sincos_2d(d, (g, g)).view(1, g, g, d), persistent=False)
        rates = torch.linspace(0, spec.drop_path, sum(depths)).tolist()
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        self.dims = []
        start = 0
        for i, (depth, h, ws) in enumerate(zip(depths, heads, windows, strict=True)):
            self.stages.append(HierStage(d, depth, h, ws, spec.mlp_ratio, rates[start:start + depth], spec.norm_eps,
                                         spec.rel_pos_bias))
            self.dims.append(d)
            start += depth
            if i < len(depths) - 1:
                self.merges.append(PatchMerging(d, spec.norm_eps))
                d *= 2
        self.norm = nn.LayerNorm(d, eps=spec.norm_eps)
        self.embed_dim = d
        self.apply(_init_weights)

    @property
    def grid(self) -> tuple[int, int]:
        """The last stage's token grid."""
        g = self.spec.img_size // (self.spec.patch_size * 2 ** (len(self.stages) - 1))
        return (g, g)

    @property
    def patch_size(self) -> int:
        """Pixels per side of one last-stage token (the unit of masks and pixel targets)."""
        return self.spec.patch_size * 2 ** (len(self.stages) - 1)

    def forward_stages(self, x: torch.Tensor, source: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every stage's output [B, H_s, W_s, C_s] (the last one normed). `source` [h, w] on the last grid
        (1 = take the token from the partner image x.flip(0)) mixes the batch and isolates the two sources."""
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # [B, H, W, D]
        sources = None
        if source is not None:
            sources = [upsample_source(source, (self.spec.img_size // (self.spec.patch_size * 2**i),) * 2)
                       for i in range(len(self.stages))]
            m = sources[0].to(x.dtype)[None, :, :, None]
            x = x * (1 - m) + x.flip(0) * m
        x = x + self.pos_embed.to(x.dtype)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x, None if sources is None else sources[i])
            if i < len(self.merges):
                outs.append(x)
                x = self.merges[i](x)
        outs.append(self.norm(x))
        return outs

    def forward_tokens(self, x: torch.Tensor, source: torch.Tensor | None = None, *,
                       grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Last-stage tokens [B, N, D] (mixed by `source` as in `forward_stages`), on the last grid or brought to
        `grid`."""
        tokens = self.forward_stages(x, source)[-1].flatten(1, 2)
        if grid is None or tuple(grid) == self.grid:
            return tokens
        return map_to_tokens(tokens.transpose(1, 2).unflatten(2, self.grid), grid)

    def pooled(self, x: torch.Tensor, pool: Literal["cls", "mean"] = "mean") -> torch.Tensor:
        """A [B, D] image feature: the mean last-stage token (there is no class token)."""
        return self.forward_tokens(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              intermediates_only: bool = True) -> list[torch.Tensor]:
        """timm-style per-stage NCHW maps (teachers, token-diversity analysis)."""
        maps = [s.permute(0, 3, 1, 2) for s in self.forward_stages(x)]
        if indices is None:
            return maps
        chosen = range(len(maps))[-indices:] if isinstance(indices, int) else indices
        return [maps[i] for i in chosen]

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """Layer-decay depths: blocks counted across stages in order (stage 1's first block is 1); a patch merge
        belongs to the block after it; the patch embedding 0; the final norm L + 1."""
        starts, total = [], 0
        for stage in self.stages:
            starts.append(total)
            total += len(stage.blocks)
        top = total + 1

        def depth(name: str) -> int:
            if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", name):
                return starts[int(m[1])] + int(m[2]) + 1
            if m := re.match(r"merges\.(\d+)\.", name):
                return starts[int(m[1]) + 1] + 1
            return 0 if name.startswith(("patch_embed", "embed_norm")) else top

        return {n: depth(n) for n, _ in self.named_parameters()}, top

    def export_state(self) -> dict[str, torch.Tensor]:
        """Own keys (an architecture of ours: `mim.models.export.load_encoder` rebuilds it)."""
        return cpu_state(self.state_dict())

    def load_export_state(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Strictly load an exported state (the sin-cos positions are a buffer rebuilt for `spec.img_size`)."""
        load_state_strict(self, state, origin)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_hier(spec: HierSpec) -> HierEncoder:
    return HierEncoder(spec)
