"""Exported encoders: a safetensors file timm can load, with the architecture in its metadata."""

from __future__ import annotations

import json
import struct

import fsspec
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from mim.engine.checkpoint import atomic_write_bytes, load_state_strict
from mim.models.cnn import CnnEncoder, CnnSpec
from mim.models.hier import HierEncoder, HierSpec
from mim.models.vit import MaskedViT, ViTSpec

Encoder = MaskedViT | CnnEncoder | HierEncoder


def build_encoder(spec: ViTSpec | CnnSpec | HierSpec) -> Encoder:
    """A randomly initialised encoder of `spec`'s architecture (ViT with MAE's init, CNN with timm's)."""
    from mim.models.cnn import build_cnn
    from mim.models.vit import build_vit

    if isinstance(spec, HierSpec):
        return HierEncoder(spec)
    return build_cnn(spec) if isinstance(spec, CnnSpec) else build_vit(spec)


def encoder_state(encoder: Encoder) -> dict[str, torch.Tensor]:
    """timm keys (a ViT without its classification head; a CNN's body), contiguous, on the CPU."""
    state = encoder.body.state_dict() if isinstance(encoder, CnnEncoder) else encoder.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith("head.")}


def export_encoder(encoder: Encoder, path: str, extra: dict[str, str] | None = None) -> None:
    """Write `encoder` to `path` (safetensors). Load it back with `load_encoder`, or with timm:
    `timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0,
    **timm_kwargs)` where both come from the file's metadata."""
    meta = {
        "format": "mim-encoder/1",
        "arch": getattr(encoder.spec, "arch", "vit"),
        "spec": json.dumps(encoder.spec.to_dict()),
        "timm_name": encoder.spec.timm_name,
        "timm_kwargs": json.dumps(encoder.spec.timm_kwargs()),
        **(extra or {}),
    }
    atomic_write_bytes(path, save_bytes(encoder_state(encoder), metadata=meta))


def _read(path: str) -> bytes:
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise FileNotFoundError(f"{path}: no exported encoder there")
    with fs.open(p, "rb") as f:
        return f.read()


def _metadata(data: bytes, path: str) -> dict[str, str]:
    try:
        (n,) = struct.unpack("<Q", data[:8])
        return json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (struct.error, ValueError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None


def read_metadata(path: str) -> dict[str, str]:
    """The metadata mim wrote beside the weights (architecture, timm name and kwargs, lineage)."""
    meta = _metadata(_read(path), path)
    if meta.get("format") != "mim-encoder/1":
        raise ValueError(f"{path}: not an encoder exported by mim (metadata format {meta.get('format')!r})")
    return meta


def load_encoder(path: str, img_size: int | None = None) -> Encoder:
    """Rebuild the encoder described by the file's metadata (a ViT, a CNN or a hierarchical encoder) and load its
    weights (strict). `img_size` rebuilds a ViT for another resolution than it was pre-trained at (FastMIM's
    low-resolution pre-training): a fixed sin-cos position table is recomputed, a learned one resampled."""
    data = _read(path)
    meta = _metadata(data, path)
    if meta.get("format") != "mim-encoder/1":
        raise ValueError(f"{path}: not an encoder exported by mim (metadata format {meta.get('format')!r})")
    spec = json.loads(meta["spec"])
    if img_size and img_size != spec.get("img_size") and meta.get("arch", "vit") == "vit":
        return _vit_at(load_bytes(data), {**spec, "img_size": img_size}, path)
    if img_size and meta.get("arch") == "hier" and img_size != spec.get("img_size"):
        spec = {**spec, "img_size": img_size}  # sin-cos positions are a buffer: rebuilt for the new grid
    if meta.get("arch") == "cnn":
        encoder = CnnEncoder(CnnSpec(**spec))
        load_state_strict(encoder.body, load_bytes(data), path)
        return encoder
    if meta.get("arch") == "hier":
        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        encoder = HierEncoder(HierSpec(**tuples))
        load_state_strict(encoder, load_bytes(data), path)
        return encoder
    encoder = MaskedViT(ViTSpec(**spec))
    load_state_strict(encoder, {**load_bytes(data), **_head_state(encoder)}, path)
    return encoder


def _vit_at(state: dict[str, torch.Tensor], spec: dict, path: str) -> MaskedViT:
    from timm.layers import resample_abs_pos_embed

    encoder = MaskedViT(ViTSpec(**spec))
    if spec.get("pos_embed", "sincos") == "sincos":
        state = {**state, "pos_embed": encoder.pos_embed.detach().clone()}
    else:
        state = {**state, "pos_embed": resample_abs_pos_embed(state["pos_embed"], list(encoder.grid),
                                                              num_prefix_tokens=encoder.num_prefix_tokens)}
    load_state_strict(encoder, {**state, **_head_state(encoder)}, path)
    return encoder


def _head_state(encoder: MaskedViT) -> dict[str, torch.Tensor]:
    return {k: v for k, v in encoder.state_dict().items() if k.startswith("head.")}
