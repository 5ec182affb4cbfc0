"""Decoding real-world image files into the pixels a model sees: EXIF orientation applied, transparency composited
onto a background colour, 16-bit and CMYK images converted, one mode out ("RGB" or "L")."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def normalize_image(img: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """`img` upright, in 8-bit `mode`: EXIF rotation applied, alpha (RGBA, LA, palette transparency) composited
    onto `background`, 16-bit grey scaled to 8 bits (not clipped), CMYK converted to RGB."""
    img.load()
    upright = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img  # copy only to rotate
    img = upright if upright is not None else img
    if img.mode in HIGH_BIT_MODES:  # 16-bit PNG/TIFF grey: keep the top 8 bits of the 16
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif img.mode == "F":  # float TIFF: taken as [0, 1]
        img = Image.fromarray((np.asarray(img, dtype=np.float32).clip(0, 1) * 255).round().astype(np.uint8), "L")
    elif img.mode == "CMYK":
        img = img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert(mode) if img.mode != mode else img


def decode_bytes(data: bytes, mode: str, background: tuple[int, int, int], draft: int | None = None) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, WebP, TIFF, ...) and normalize it; `draft` lets a JPEG decoder downscale
    by a power of two while keeping the shorter side >= draft."""
    with Image.open(io.BytesIO(data)) as img:
        if draft is not None and img.format == "JPEG":
            img.draft(mode, (draft, draft))
        return normalize_image(img, mode, background)
