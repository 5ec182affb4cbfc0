"""HOG targets: zero on constant images, an edge's mass in the right bin, both flavours equal a slow reference
loop, and the per-patch layout."""

from __future__ import annotations

import math

import pytest
import torch

from mim.targets.hog import HogTarget, hog_cells, hog_dim, hog_targets


def reference_hog(img: torch.Tensor, cell: int, bins: int, flavour: str) -> torch.Tensor:
    """One [C, H, W] image, pixel by pixel: [C, bins, H / cell, W / cell]."""
    c, h, w = img.shape
    x = img.double()
    out = torch.zeros(c, bins, h // cell, w // cell, dtype=torch.float64)
    sobel = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    reflect = lambda i, n: -i if i < 0 else 2 * (n - 1) - i if i >= n else i  # noqa: E731
    at = lambda ch, i, j: x[ch, reflect(i, h), reflect(j, w)]  # noqa: E731
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                if flavour == "dmjd":
                    gx = x[ch, i, j + 1] - x[ch, i, j - 1] if 0 < j < w - 1 else 0.0
                    gy = x[ch, i + 1, j] - x[ch, i - 1, j] if 0 < i < h - 1 else 0.0
                else:
                    gx = sum(sobel[a][b] * at(ch, i + a - 1, j + b - 1) for a in range(3) for b in range(3))
                    gy = sum(sobel[b][a] * at(ch, i + a - 1, j + b - 1) for a in range(3) for b in range(3))
                gx, gy = float(gx), float(gy)
                angle = math.atan2(gy, gx) % math.pi
                out[ch, min(int(angle / (math.pi / bins)), bins - 1), i // cell, j // cell] += math.hypot(gx, gy)
    if flavour == "dmjd":
        out = out / cell**2
        mean, var = out.mean(1, keepdim=True), out.var(1, unbiased=False, keepdim=True)
        return (out - mean) / torch.sqrt(var + 1e-5)
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def test_constant_image_has_no_gradient():
    img = torch.full((2, 3, 16, 16), 173.0)
    for flavour in ("dmjd", "maskfeat"):
        assert torch.count_nonzero(hog_cells(img, cell=4, flavour=flavour)) == 0


def test_a_vertical_edge_puts_its_mass_in_the_horizontal_gradient_bin():
    img = torch.zeros(1, 1, 16, 16)
    img[..., 8:] = 255.0  # dark left half, bright right half: the gradient points along +x
    for flavour in ("dmjd", "maskfeat"):
        hist = hog_cells(img, cell=4, bins=9, flavour=flavour)[0, 0]  # [9, 4, 4]
        edge_cells = hist[:, :, 1:3]  # the cell columns touching x = 8
        assert edge_cells.argmax(0).eq(0).all()  # bin 0 = orientation [0, 20) degrees: horizontal gradient
        if flavour == "maskfeat":
            assert hist[:, :, [0, 3]].abs().sum() == 0  # cells away from the edge stay empty


@pytest.mark.parametrize("flavour", ["dmjd", "maskfeat"])
def test_matches_a_slow_reference_loop(flavour):
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    fast = hog_cells(img, cell=4, bins=9, flavour=flavour)
    for b in range(2):
        assert torch.allclose(fast[b].double(), reference_hog(img[b], 4, 9, flavour), atol=1e-4)


def test_per_patch_layout_and_module():
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    cells = hog_cells(img, cell=2)  # [1, 3, 9, 8, 8]
    per_patch = hog_targets(img, 4, cell=2)  # 2x2 cells per 4-px patch
    assert per_patch.shape == (1, 16, hog_dim(4, 2, 3)) == (1, 16, 108)
    # patch (row 1, col 2) = cells rows 2..3, cols 4..5, in (cell row, cell col, channel, bin) order
    expected = cells[0, :, :, 2:4, 4:6].permute(2, 3, 0, 1).reshape(-1)
    assert torch.equal(per_patch[0, 1 * 4 + 2], expected)
    target = HogTarget(4, 3, mean=(0.5,) * 3, std=(0.5,) * 3, cell=2)
    assert torch.allclose(target(img / 127.5 - 1), per_patch, atol=1e-3)  # normalized input -> 0..255 inside
    with pytest.raises(ValueError, match="HOG cell 3 px does not divide the 4-px patches"):
        HogTarget(4, 3, mean=(0.5,) * 3, std=(0.5,) * 3, cell=3)
