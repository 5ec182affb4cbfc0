"""Real image files decode to what a person sees: upright, transparency on the background, 16-bit and CMYK right."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mim.data import load_image_folder
from mim.data.decode import decode_bytes

WHITE = (255, 255, 255)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white, in the stored (landscape) frame
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = np.asarray(decode_bytes(data, "RGB", WHITE))
    assert out.shape == (40, 20, 3)  # displayed upright: portrait
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # the white half is now on top
    raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert raw.shape == (20, 40, 3)  # control: without the EXIF step the frame stays landscape


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 128, 0)])
def test_alpha_is_composited_onto_the_background(background):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red-ish, right half fully transparent
    out = np.asarray(decode_bytes(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), "RGB", background))
    assert (out[:, :4] == (200, 0, 0)).all()
    assert (out[:, 4:] == background).all()  # not black (what a plain convert("RGB") gives)


def test_palette_transparency_uses_the_background():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.putpixel((0, 0), 1)
    out = np.asarray(decode_bytes(_encode(img, "PNG", transparency=0), "RGB", WHITE))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[3, 3]) == WHITE


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 4095).astype(np.uint16)  # 4095 .. 65535
    data = _encode(Image.fromarray(ramp), "PNG")  # a 16-bit grey PNG
    out = np.asarray(decode_bytes(data, "L", WHITE))
    assert out.dtype == np.uint8 and out.min() == 15 and out.max() == 255
    assert (np.diff(out.ravel().astype(int)) > 0).all()  # the ramp survives (clipping would flatten it to 255)


def test_cmyk_converts_to_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(decode_bytes(_encode(cmyk, "JPEG", quality=100), "RGB", WHITE))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_folder_names_the_files_it_skipped(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.new("RGB", (10, 12), (i * 50, 0, 0)).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        ds = load_image_folder(str(tmp_path), size=8)
    assert len(ds) == 3 and [p.rsplit("/", 1)[-1] for p in ds.skipped] == ["broken.jpg"]
