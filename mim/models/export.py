"""Exported encoders: a safetensors file timm can load, with the architecture in its metadata."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from typing import IO

import torch
from safetensors.torch import load as load_bytes

from mim.io import atomic_write, read_bytes
from mim.models.cnn import CnnEncoder, CnnSpec
from mim.models.encoder import Encoder, EncoderSpec
from mim.models.hier import HierEncoder, HierSpec
from mim.models.vit import MaskedViT, ViTSpec

__all__ = ["ARCHS", "Encoder", "PooledEncoder", "build_encoder", "encoder_state", "export_encoder", "load_encoder",
           "read_metadata"]

# metadata "arch" -> (spec type, encoder type) that `load_encoder` rebuilds a file with (no initialisation)
ARCHS: dict[str, tuple[type[EncoderSpec], type[Encoder]]] = {
    "vit": (ViTSpec, MaskedViT),
    "cnn": (CnnSpec, CnnEncoder),
    "hier": (HierSpec, HierEncoder),
}


class PooledEncoder(torch.nn.Module):
    """`model(x)`: [B, C, H, W] images -> [B, D] features pooled by `pool`, what the frozen probes see; a plain
    module for tools that call `forward` (MLflow's model flavour, `torch.export`)."""

    def __init__(self, encoder: Encoder, pool: str = "mean") -> None:
        super().__init__()
        self.encoder, self.pool = encoder, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(x, self.pool)


def build_encoder(spec: EncoderSpec) -> Encoder:
    """A randomly initialised encoder of `spec`'s architecture (ViT with MAE's init, CNN with timm's)."""
    return spec.build()


def encoder_state(encoder: Encoder) -> dict[str, torch.Tensor]:
    """timm keys (a ViT without its classification head; a CNN's body), contiguous, on the CPU."""
    return encoder.export_state()


def export_encoder(encoder: Encoder, path: str, extra: dict[str, str] | None = None) -> None:
    """Write `encoder` to `path` (safetensors). Load it back with `load_encoder`, or with timm:
    `timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0,
    **timm_kwargs)` where both come from the file's metadata."""
    meta = {
        "format": "mim-encoder/1",
        "arch": encoder.spec.arch,
        "spec": json.dumps(encoder.spec.to_dict()),
        "timm_name": encoder.spec.timm_name,
        "timm_kwargs": json.dumps(encoder.spec.timm_kwargs()),
        **(extra or {}),
    }
    state = encoder_state(encoder)
    atomic_write(path, lambda f: write_safetensors(f, state, meta))


# safetensors' dtype names
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def write_safetensors(f: IO[bytes], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Stream `tensors` to `f` in the safetensors format with deterministic bytes: the metadata keys sorted (the
    safetensors library writes them in hash order, which changes between processes, so identical runs' files and
    their DVC hashes would differ), the tensors in safetensors' own order (larger items first, then by name), and
    each tensor written from its own memory (no second copy of the whole file)."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; writing them on a big-endian machine is unsupported")
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, object] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be exported")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the library writes it
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name in order:
        t = tensors[name].detach().to("cpu").contiguous()
        if t.numel():
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def _read(path: str) -> bytes:
    return read_bytes(path, "exported encoder")


def _metadata(data: bytes, path: str) -> dict[str, str]:
    try:
        (n,) = struct.unpack("<Q", data[:8])
        return json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (struct.error, ValueError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None


def safetensors_metadata(data: bytes, origin: str) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes ({} when it has none); not a safetensors file: a ValueError naming
    `origin`."""
    return _metadata(data, origin)


def read_safetensors(data: bytes, origin: str) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes; a file cut short (an interrupted copy or download) or otherwise damaged is
    a ValueError naming `origin`, not the library's traceback."""
    from safetensors import SafetensorError

    try:
        return load_bytes(data)
    except SafetensorError as err:
        cause = str(err).removeprefix("Error while deserializing header: ").removeprefix("Error while deserializing: ")
        raise ValueError(f"{origin}: not a readable safetensors file: {cause} (cut short or damaged; copy or "
                         "download it again)") from None


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
    arch = meta.get("arch", "vit")
    if arch not in ARCHS:
        raise ValueError(f"{path}: unknown encoder architecture {arch!r} (known: {', '.join(ARCHS)})")
    spec_type, encoder_type = ARCHS[arch]
    spec, state = _spec_fields(meta, spec_type, path), read_safetensors(data, path)
    resized = bool(img_size) and img_size != spec.get("img_size") and arch != "cnn"  # a CNN takes any size
    if resized:  # the hierarchical encoder's sin-cos positions are a buffer: rebuilt for the new grid
        spec = {**spec, "img_size": img_size}
    try:
        built = spec_type.from_dict(spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the metadata's spec is refused: {err}") from None
    encoder = encoder_type(built)
    if resized and arch == "vit":
        state = _vit_positions(encoder, state)
    encoder.load_export_state(state, path)
    return encoder


def _spec_fields(meta: dict[str, str], spec_type: type[EncoderSpec], path: str) -> dict:
    """The metadata's spec as a mapping of the fields `spec_type` has: the file is untrusted, so an unknown key is
    refused (with its name and the file's), never passed on."""
    if "spec" not in meta:
        raise ValueError(f"{path}: the metadata has no 'spec' key (the architecture's fields); not an encoder "
                         "exported by mim, or a damaged one")
    try:
        spec = json.loads(meta["spec"])
    except ValueError:
        raise ValueError(f"{path}: the metadata's spec is not JSON; not an encoder exported by mim") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: the metadata's spec is not a mapping; not an encoder exported by mim")
    known = {f.name for f in dataclasses.fields(spec_type)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"{path}: metadata spec key {unknown[0]!r} is not one mim writes (refused: an encoder file "
                         f"is untrusted input; known keys: {', '.join(sorted(known))})")
    return spec


def _vit_positions(encoder: MaskedViT, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the position table of `encoder`'s grid: a fixed sin-cos table recomputed, a learned one
    resampled."""
    from timm.layers import resample_abs_pos_embed

    if encoder.spec.pos_embed == "sincos":
        return {**state, "pos_embed": encoder.pos_embed.detach().clone()}
    return {**state, "pos_embed": resample_abs_pos_embed(state["pos_embed"], list(encoder.grid),
                                                         num_prefix_tokens=encoder.num_prefix_tokens)}
