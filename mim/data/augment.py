"""Batched random-resized-crop + flip + normalize for uint8 image tensors, on their own device.

Crop parameters are drawn on the CPU from an explicit generator (so a run replays the same crops on
any device) and applied with one `affine_grid` + `grid_sample` call for the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ATTEMPTS = 10


@dataclass(frozen=True)
class CropParams:
    """Per-image crop boxes and horizontal flips for one batch.

    Boxes are in normalized image coordinates (0 = left/top edge, 1 = right/bottom edge), so the
    same parameters apply to any image resolution.
    """

    boxes: Tensor  # [B, 4] float, normalized (x0, y0, x1, y1) in [0, 1]
    flip: Tensor  # [B] bool

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or not self.boxes.is_floating_point():
            got = f"{self.boxes.dtype} {list(self.boxes.shape)}"
            raise ValueError(f"crop boxes must be a float tensor [B, 4], got {got}")
        if self.flip.dtype != torch.bool or self.flip.shape != self.boxes.shape[:1]:
            got = f"{self.flip.dtype} {list(self.flip.shape)}"
            raise ValueError(f"crop flips must be a bool tensor [{self.boxes.shape[0]}], got {got}")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def slice(self, start: int, stop: int) -> CropParams:
        """The parameters of images `start:stop` (e.g. one rank's share of a global batch)."""
        return CropParams(boxes=self.boxes[start:stop], flip=self.flip[start:stop])

    def to(self, device: torch.device | str) -> CropParams:
        """The same parameters on `device`."""
        return CropParams(boxes=self.boxes.to(device), flip=self.flip.to(device))


def sample_crops(
    n: int,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip_prob: float = 0.5,
    generator: torch.Generator,
) -> CropParams:
    """Random-resized-crop boxes like torchvision's, drawn for `n` images at once.

    Area fraction ~ U(scale), aspect ratio (w/h, for a square image) log-uniform in `ratio`; of 10
    attempts per image the first that fits wins, else the whole image. Position is uniform.
    """
    _check_crop_args(scale, ratio, hflip_prob)
    if n < 0:
        raise ValueError(f"number of crops must be >= 0, got {n}")
    if generator.device.type != "cpu":
        raise ValueError(f"crops are drawn on the CPU for device independence; got a {generator.device} generator")
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, _ATTEMPTS, generator=generator)  # [n, A]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, _ATTEMPTS, generator=generator))  # [n, A]
    w = torch.sqrt(area * aspect)  # [n, A] fraction of the image width
    h = torch.sqrt(area / aspect)  # [n, A] fraction of the image height
    fits = (w <= 1) & (h <= 1)  # [n, A]
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # [n, 1] first fitting attempt (0 if none)
    found = fits.any(dim=1)  # [n]
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.ones(n))  # [n]
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.ones(n))  # [n]
    pos = torch.rand(n, 2, generator=generator)  # [n, 2] uniform placement of the box
    x0 = pos[:, 0] * (1 - w)
    y0 = pos[:, 1] * (1 - h)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1).clamp_(0, 1)  # [n, 4]
    flip = torch.rand(n, generator=generator) < hflip_prob  # [n] bool
    return CropParams(boxes=boxes, flip=flip)


def full_crops(n: int) -> CropParams:
    """Whole-image boxes with no flip, for evaluation."""
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(n, 4).clone()  # [n, 4]
    return CropParams(boxes=boxes, flip=torch.zeros(n, dtype=torch.bool))


def center_crops(n: int, crop_pct: float) -> CropParams:
    """The central `crop_pct` of each image's side, no flip: resized to the output size this is timm's evaluation
    transform (resize to size / crop_pct, then center-crop size)."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    lo, hi = (1 - crop_pct) / 2, (1 + crop_pct) / 2
    boxes = torch.tensor([lo, lo, hi, hi]).expand(n, 4).clone()  # [n, 4]
    return CropParams(boxes=boxes, flip=torch.zeros(n, dtype=torch.bool))


def input_channels(stored: int, to_rgb: bool) -> int:
    """The model input's channels for images stored with `stored` channels: grey repeated to RGB when `to_rgb`."""
    return 3 if to_rgb and stored == 1 else stored


def apply_crops(
    images: Tensor,
    crops: CropParams,
    *,
    out_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    to_rgb: bool = True,
) -> Tensor:
    """Crop, resize to `out_size`, flip and normalize a uint8 batch: [B, C, H, W] -> [B, C', out, out] float32.

    Bilinear sampling without antialiasing (like `F.interpolate(..., antialias=False)`), so strong
    downscaling aliases; grayscale becomes 3 identical channels when `to_rgb`.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 tensor [B, C, H, W], got {images.dtype} {list(images.shape)}")
    if len(crops) != images.shape[0]:
        raise ValueError(f"{len(crops)} crops for a batch of {images.shape[0]} images")
    if out_size < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    channels = input_channels(images.shape[1], to_rgb)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must have one value per output channel ({channels})")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {tuple(std)}")

    device = images.device
    b = images.shape[0]
    boxes = crops.boxes.to(device=device, dtype=torch.float32, non_blocking=True)  # [B, 4]
    flip = crops.flip.to(device=device, non_blocking=True)  # [B]
    # Output coords in [-1, 1] map to input coords: x_in = center + half_extent * x_out (negated to flip).
    sx = boxes[:, 2] - boxes[:, 0]  # [B] half-width in [-1, 1] units == width in [0, 1] units
    sy = boxes[:, 3] - boxes[:, 1]  # [B]
    cx = boxes[:, 0] + boxes[:, 2] - 1  # [B] box center in [-1, 1]
    cy = boxes[:, 1] + boxes[:, 3] - 1  # [B]
    sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, [b, images.shape[1], out_size, out_size], align_corners=False)  # [B, out, out, 2]
    x = images.float().div_(255)  # [B, C, H, W] float32 in [0, 1]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [B, C, out, out]
    if channels != images.shape[1]:
        out = out.expand(-1, channels, -1, -1)  # [B, 3, out, out] gray -> RGB
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (out - mean_t) / std_t  # [B, C', out, out] float32


@dataclass(frozen=True)
class BatchAugment:
    """A configured augmentation: sample crop parameters on the CPU, then apply them on the images' device."""

    out_size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    to_rgb: bool = True

    def __post_init__(self) -> None:
        if self.out_size < 1:
            raise ValueError(f"out_size must be >= 1, got {self.out_size}")
        _check_crop_args(self.scale, self.ratio, self.hflip_prob)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {tuple(self.mean)} and std {tuple(self.std)} differ in length")

    def out_channels(self, stored: int) -> int:
        """Channels of the model input made from images stored with `stored` channels: the one rule for a model's
        `in_chans` (grey images are repeated to RGB when `to_rgb`)."""
        return input_channels(stored, self.to_rgb)

    def sample(self, n: int, generator: torch.Generator) -> CropParams:
        """Random crops and flips for `n` images."""
        return sample_crops(n, scale=self.scale, ratio=self.ratio, hflip_prob=self.hflip_prob, generator=generator)

    def __call__(self, images: Tensor, crops: CropParams) -> Tensor:
        """[B, C, H, W] uint8 -> [B, C', out_size, out_size] float32, normalized."""
        return apply_crops(images, crops, out_size=self.out_size, mean=self.mean, std=self.std, to_rgb=self.to_rgb)

    def eval(self, images: Tensor, crop_pct: float | None = None) -> Tensor:
        """Resize + normalize (no randomness), for evaluation: the whole image, or its central `crop_pct`."""
        n = images.shape[0]
        return self(images, full_crops(n) if crop_pct is None else center_crops(n, crop_pct))

    def crop_uint8(self, images: Tensor, crops: CropParams) -> Tensor:
        """[B, C, H, W] uint8 -> [B, C, out_size, out_size] uint8 cropped, resized and flipped, not normalized (for
        per-image augmentations that work on pixels, then `normalize_uint8`)."""
        c = images.shape[1]
        x = apply_crops(images, crops, out_size=self.out_size, mean=(0.0,) * c, std=(1.0,) * c, to_rgb=False)
        return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)

    def normalize_uint8(self, images: Tensor) -> Tensor:
        """[B, C, out_size, out_size] uint8 already cropped (by the shard loader) -> the normalized model input
        (grey repeated to RGB when `to_rgb`)."""
        x = images.float().div_(255)
        if self.to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.normalize(x)

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalized [B, C, H, W] -> pixels in [0, 1] (before normalization)."""
        return x * self._stat(self.std, x) + self._stat(self.mean, x)

    def normalize(self, pixels: Tensor) -> Tensor:
        """Pixels in [0, 1] -> the normalized input the models see."""
        return (pixels - self._stat(self.mean, pixels)) / self._stat(self.std, pixels)

    @staticmethod
    def _stat(values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def _check_crop_args(scale: tuple[float, float], ratio: tuple[float, float], hflip_prob: float) -> None:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must be (lo, hi) with 0 < lo <= hi <= 1, got {tuple(scale)}")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"crop ratio must be (lo, hi) with 0 < lo <= hi, got {tuple(ratio)}")
    if not 0 <= hflip_prob <= 1:
        raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
