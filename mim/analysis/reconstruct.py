"""Reconstruction pictures of a method on any images: input / masked / prediction / composite under a seeded mask.

The mask comes from `method.picture_masks` with a generator seeded by `seed` alone, so every method with the same
token grid, mask unit and ratio shows the same mask (`mim.masking.picture_masking`) and grids compare side by
side; methods with other mask kinds (CCViT's blocks, MixMIM's mixing) draw theirs from the same seed. Drawing
never touches the caller's random state: the method runs in eval mode, without gradients, under a forked RNG, and
its train/eval mode is restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from mim.analysis.attention import cls_attention_maps
from mim.analysis.plots import attention_figure, figure_png, reconstruction_figure, save_png
from mim.models.vit import MaskedViT
from mim.rng import derive_seed, generator_for


class Reconstructs(Protocol):
    """What pictures need of a method (`mim.methods.MIMMethod` has it all; this layer sits below the methods)."""

    name: str
    encoder: nn.Module
    training: bool
    picture_batch_multiple: int

    def picture_masks(self, batch_size: int, generator: torch.Generator) -> Any: ...

    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...

    def picture_note(self) -> str: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


@dataclass(frozen=True)
class Reconstruction:
    """The named panels ([B, C, H, W], normalized like the input), in display order, and the caption."""

    panels: dict[str, torch.Tensor]
    caption: str


@contextlib.contextmanager
def isolated(method: Reconstructs, device: torch.device) -> Iterator[None]:
    """Run `method` in eval mode without gradients and with the global (and CUDA) RNG state saved and restored, so
    that drawing pictures between training steps changes nothing training computes."""
    was_training = method.training
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        method.eval()
        try:
            yield
        finally:
            method.train(was_training)


def reconstruct(method: Reconstructs, images: torch.Tensor, seed: int) -> Reconstruction:
    """The method's reconstruction of `images` ([B, C, H, W], normalized as in training, on the method's device)
    under the picture mask of `seed`: `input`, `masked` (what the method was given), then the method's own panels
    (`prediction`, `composite`: visible pixels from the input, masked ones from the prediction, and any extras)."""
    with isolated(method, images.device):
        torch.manual_seed(derive_seed(seed, "pictures", "torch"))  # methods that sample (CIM's generator)
        mask = method.picture_masks(len(images), generator_for(seed, "pictures")).to(images.device)
        out = method.reconstruct({"images": images, "mask": mask})
    panels = {"input": images, **{("masked" if k == "input" else k): v.float() for k, v in out.items()}}
    return Reconstruction(panels, method.picture_note())


def reconstruction_png(method: Reconstructs, images: torch.Tensor, seed: int, mean: tuple[float, ...],
                       std: tuple[float, ...], title: str = "", row_labels: list[str] | None = None) -> bytes:
    """`reconstruct`'s grid as PNG bytes: one row per image, the caption under it."""
    rec = reconstruct(method, images, seed)
    return figure_png(reconstruction_figure(rec.panels, mean, std, caption=rec.caption, title=title,
                                            row_labels=row_labels))


def pages(n: int, per_page: int, multiple: int) -> list[list[int]]:
    """Image indices of each grid: `per_page` rows (rounded up to `multiple`), the last grid completed with the
    first images again when its count is not a multiple of `multiple` (MixMIM pairs images)."""
    per_page = -(-per_page // multiple) * multiple
    out = [list(range(i, min(i + per_page, n))) for i in range(0, n, per_page)]
    if out and len(out[-1]) % multiple:
        out[-1] += [i % n for i in range(multiple - len(out[-1]) % multiple)]
    return out


def write_pictures(method: Reconstructs, images: torch.Tensor, out_dir: str, *, seed: int, mean: tuple[float, ...],
                   std: tuple[float, ...], per_grid: int = 8, names: list[str] | None = None) -> list[str]:
    """Reconstruction grids of `images` (normalized [N, C, H, W], on the method's device) as
    `out_dir/reconstructions-<k>.png`, `per_grid` images each, and for a ViT encoder the class token's last-layer
    attention per head as `out_dir/attention-<k>.png`. Row i of every grid has the same mask. Returns the paths."""
    written = []
    vit = isinstance(method.encoder, MaskedViT)
    for k, idx in enumerate(pages(len(images), per_grid, method.picture_batch_multiple), start=1):
        x = images[idx]
        labels = [names[i] for i in idx] if names else None
        path = f"{out_dir}/reconstructions-{k:02d}.png"
        save_png(reconstruction_png(method, x, seed, mean, std, title=f"{method.name} (mask seed {seed})",
                                    row_labels=labels), path)
        written.append(path)
        if vit:
            with isolated(method, x.device):
                maps = cls_attention_maps(method.encoder, x)
            path = f"{out_dir}/attention-{k:02d}.png"
            title = f"{method.name}: class-token attention of the last block, per head"
            save_png(figure_png(attention_figure(x, maps, mean, std, title=title)), path)
            written.append(path)
    return written
