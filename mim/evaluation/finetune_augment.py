"""Fine-tuning's augmentations beyond crop + flip, the standard ViT recipe's (MAE, DeiT through timm): RandAugment on
each cropped image, random erasing on the normalized batch, and the evaluation center crop (`BatchAugment.eval`).

RandAugment is timm's own `rand_augment_transform`, driven by its config string, and it works on PIL images: it runs
per image on the CPU, between the batched crop (`BatchAugment.crop_uint8`) and normalization. Why not
torchvision.transforms.v2.RandAugment on uint8 tensors: it has neither timm's config string nor its magnitude noise
(`mstd`) and op set (`inc`), and it draws one op for a whole batched tensor, so it would loop per image too. The
cost is small at the sizes this runs on (28 px images); a large-image GPU run would move it into loader workers.

Randomness: timm draws from Python's `random`, numpy's and torch's global generators. Each step runs them seeded
from (seed, key, step, rank) and restores them after (`mim.rng.seeded_globals`), so a resumed fine-tune replays the
same batches and no other draw changes (like drop path and mixup, the draws depend on the rank).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from mim.rng import derive_seed, seeded_globals

PilTransform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True, kw_only=True)
class FinetuneAugment:
    """The recipe parts (params `finetune.auto_augment`, `reprob`, `remode`, `recount`, `eval_crop_pct`); the
    defaults are all off."""

    auto_augment: str | None = None  # timm RandAugment config string, e.g. "rand-m9-mstd0.5-inc1"
    reprob: float = 0.0  # random erasing probability per image
    remode: Literal["const", "rand", "pixel"] = "pixel"
    recount: int = 1  # up to this many erased boxes per image
    eval_crop_pct: float | None = None  # test images: central crop_pct of the side, resized (None = whole image)


def rand_augment(config: str, image_size: int, mean: tuple[float, ...]) -> PilTransform:
    """timm's RandAugment for `config` with the hparams timm's `create_transform` gives it (translation 45 % of the
    size, fill = the mean colour); a bad string is one error naming `finetune.auto_augment`."""
    from timm.data.auto_augment import rand_augment_transform

    fill = tuple(min(255, round(255 * m)) for m in (mean if len(mean) == 3 else mean[:1] * 3))
    try:
        transform = rand_augment_transform(config, {"translate_const": int(image_size * 0.45), "img_mean": fill})
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(f"finetune.auto_augment {config!r} is not a timm RandAugment config string "
                         f"(rand-m9-mstd0.5-inc1: m magnitude, n ops, mstd noise, inc increasing ops): {e}") from None
    for op in transform.ops:  # Pillow >= 11 refuses the 0 bits timm's Posterize asks for at a magnitude's end
        if op.name.startswith("Posterize"):
            op.level_fn = lambda magnitude, hparams, level=op.level_fn: (max(1, level(magnitude, hparams)[0]),)
    return transform


def rand_augment_batch(images: torch.Tensor, transform: PilTransform, seed: int) -> torch.Tensor:
    """[B, C, H, W] uint8 (C 1 or 3) -> the same shape, each image through `transform` with the global generators
    seeded from `seed` (grey images are augmented as RGB and come back as their first channel)."""
    channels = images.shape[1]
    pixels = images.cpu().permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
    out = []
    with seeded_globals(seed):
        for img in pixels:
            pil = Image.fromarray(img[..., 0] if channels == 1 else img).convert("RGB")
            out.append(torch.from_numpy(np.asarray(transform(pil))[..., :channels].copy()))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous().to(images.device)  # [B, C, H, W]


def random_erase(x: torch.Tensor, probability: float, mode: str, max_count: int, seed: int) -> torch.Tensor:
    """timm's RandomErasing over a normalized batch [B, C, H, W] (in place, returned), its draws seeded by `seed`."""
    from timm.data.random_erasing import RandomErasing

    eraser = RandomErasing(probability=probability, mode=mode, max_count=max_count, device=x.device)
    with seeded_globals(seed, x.device):
        return eraser(x)


class StepAugment:
    """Applies a `FinetuneAugment` to one training step's batch: RandAugment between crop and normalization,
    random erasing after; each seeded from (seed, step, rank)."""

    def __init__(self, recipe: FinetuneAugment, image_size: int, mean: tuple[float, ...], seed: int) -> None:
        self.recipe, self.seed = recipe, seed
        self.randaug = rand_augment(recipe.auto_augment, image_size, mean) if recipe.auto_augment else None

    @property
    def on_pixels(self) -> bool:
        """True when the batch must be cropped to uint8 first (RandAugment works on pixels)."""
        return self.randaug is not None

    def pixels(self, images: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        """Cropped uint8 batch -> RandAugment-ed uint8 batch."""
        return rand_augment_batch(images, self.randaug, derive_seed(self.seed, "ft-randaug", step, rank))

    def normalized(self, x: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        """Normalized batch -> randomly erased (when `reprob` > 0)."""
        r = self.recipe
        if r.reprob <= 0:
            return x
        return random_erase(x, r.reprob, r.remode, r.recount, derive_seed(self.seed, "ft-erase", step, rank))
