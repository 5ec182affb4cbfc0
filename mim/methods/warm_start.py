"""Warm starts (`model.init_from`): a method begins pre-training (step 0, fresh optimizer) from published weights.

Sources, told apart by the file's metadata, then by its keys:
  - our full model (`model.safetensors`, `mim.methods.weights`): every key, decoder and heads included;
  - our encoder (`encoder.safetensors`, or a folder `mim export` wrote): the encoder only;
  - a HuggingFace `ViTMAEForPreTraining` folder (config.json + model.safetensors or pytorch_model.bin), or
    `hf-hub:org/name` downloaded with huggingface_hub;
  - the official MAE checkpoint layout (`mae_pretrain_vit_base_full.pth`'s `model`), or any timm ViT state dict.
Foreign layouts become our MAE keys (`mim.models.convert`), so the encoder part loads into any method with a ViT
encoder and the decoder where the method's decoder is MAE's. A tensor of another shape is an error naming the
key, both shapes and the param to change; position tables of another grid are resampled (a learned one) or kept
as this model computed them (a fixed sin-cos one); a decoder predicting another target keeps its own output
layer. Keys only one side has are listed in the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from mim.io import file_md5, filesystem, read_bytes
from mim.methods.weights import MODEL_FORMAT, external_prefixes, read_weights_file
from mim.models.convert import (
    convert_mae_official_state_dict,
    convert_vitmae_state_dict,
    is_timm_vit_layout,
    is_vitmae_layout,
)
from mim.models.state import load_failure

log = logging.getLogger("mim.train")
FIELD = "model.init_from"
HUB_PREFIX = "hf-hub:"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "encoder.safetensors")


class WarmStartError(ValueError):
    """Weights `model.init_from` names that cannot start this run: unreadable, of an unknown layout, or of
    another shape."""


@dataclass(frozen=True)
class InitSource:
    """What `model.init_from` names, resolved to files: the weights (one file, or a sharded HF checkpoint's
    shards), an HF/timm `config.json` beside them, and a digest of their contents (part of the run's identity)."""

    spec: str
    files: tuple[str, ...]
    config: str | None
    digest: str


@dataclass(frozen=True)
class WarmStart:
    """What a warm start loaded: the layout it read, the tensors per part (`encoder`, `decoder`, ...), the keys
    only the model has (`missing`: kept as initialised) or only the file has (`unexpected`: ignored)."""

    layout: str
    parts: dict[str, int]
    missing: list[str]
    unexpected: list[str]
    notes: list[str]


# -- where the weights are -----------------------------------------------------------------------------------------
def resolve_init(spec: str) -> InitSource:
    """The files `spec` (a path, an fsspec URL, a folder or `hf-hub:org/name`) names, with their digest."""
    folder = _hub_folder(spec.removeprefix(HUB_PREFIX)) if spec.startswith(HUB_PREFIX) else spec
    fs, path = filesystem(folder)
    if not fs.exists(path):
        raise FileNotFoundError(f"{FIELD} {spec}: no such file or folder")
    if not fs.isdir(path):
        files, config = (folder,), None
    else:
        base = folder.rstrip("/")
        config = f"{base}/config.json" if fs.exists(f"{path.rstrip('/')}/config.json") else None
        index = f"{base}/model.safetensors.index.json"
        present = [name for name in _WEIGHT_FILES if fs.exists(f"{path.rstrip('/')}/{name}")]
        if present:
            files = (f"{base}/{present[0]}",)
        elif fs.exists(f"{path.rstrip('/')}/model.safetensors.index.json"):  # a sharded HF checkpoint
            shards = sorted(set(json.loads(read_bytes(index, "shard index"))["weight_map"].values()))
            files = tuple(f"{base}/{name}" for name in shards)
        else:
            raise FileNotFoundError(f"{FIELD} {spec}: the folder has none of {', '.join(_WEIGHT_FILES)}")
    return InitSource(spec, files, config, _digest([*files, *([config] if config else [])]))


def _digest(urls: list[str]) -> str:
    """md5 of a local file's bytes (a remote one's checksum from its file system); several combined."""
    parts = []
    for url in urls:
        fs, path = filesystem(url)
        parts.append(file_md5(Path(path)) if isinstance(fs, LocalFileSystem) else str(fs.checksum(path)))
    return parts[0] if len(parts) == 1 else hashlib.md5(json.dumps(parts).encode()).hexdigest()


def _hub_folder(repo: str) -> str:
    """The local folder of `repo`'s config.json and weights, downloaded into huggingface_hub's cache."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise WarmStartError(f"{FIELD} {HUB_PREFIX}{repo}: downloading from the Hugging Face Hub needs the "
                             "huggingface_hub package (pip install huggingface_hub), or download the folder and "
                             "set model.init_from to its path") from None
    try:
        config = hf_hub_download(repo, "config.json")
        try:
            hf_hub_download(repo, "model.safetensors")
        except EntryNotFoundError:
            hf_hub_download(repo, "pytorch_model.bin")
    except Exception as err:  # offline, no such repository, no access: one line, whatever huggingface_hub raised
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WarmStartError(f"{FIELD} {HUB_PREFIX}{repo}: could not download it from the Hugging Face Hub "
                             f"({type(err).__name__}: {cause}); download the folder where the hub is reachable and "
                             "set model.init_from to its path") from None
    return str(Path(config).parent)


# -- reading them as our keys --------------------------------------------------------------------------------------
def read_init_state(source: InitSource, method: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """`source`'s tensors under `method`'s state-dict keys, and a name for the layout they came in."""
    state: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    for url in source.files:
        part, meta = _read_file(url)
        state.update(part)
    config = json.loads(read_bytes(source.config, "config")) if source.config else {}
    if meta.get("format") == MODEL_FORMAT:
        return state, f"mim full model ({meta.get('method', '?')})"
    if meta.get("format") == "mim-encoder/1" or "architecture" in config:  # ours, or a timm folder `mim export` wrote
        encoder = getattr(method, "encoder", None)
        prefix = "encoder." + (_export_prefix(encoder) if encoder is not None else "")
        return {prefix + k: v for k, v in state.items()}, "mim encoder" if meta else "timm encoder"
    keys = set(state)
    try:
        if is_vitmae_layout(keys):
            _check_vitmae_config(config, source, method)
            return convert_vitmae_state_dict(state), "HF ViTMAE"
    except KeyError as err:
        raise WarmStartError(f"{FIELD} {source.spec}: {err.args[0]}") from None
    if is_timm_vit_layout(keys):
        return convert_mae_official_state_dict(state), "MAE/timm"
    first = ", ".join(sorted(keys)[:4])
    raise WarmStartError(f"{FIELD} {source.spec}: weights of a layout mim does not know (first keys: {first}); it "
                         "reads mim's model.safetensors / encoder.safetensors, a HF ViTMAE folder and the official "
                         "MAE checkpoint layout")


def _read_file(url: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if url.endswith(".safetensors"):
        return read_weights_file(url)
    try:
        obj = torch.load(io.BytesIO(read_bytes(url, "weights")), map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, OSError, TypeError) as err:
        raise WarmStartError(f"{FIELD} {url}: not a readable torch weights file ({load_failure(err)})") from None
    for key in ("model", "state_dict"):  # the official MAE checkpoint: {"model": ..., "optimizer": ..., "epoch": ...}
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WarmStartError(f"{FIELD} {url}: holds no state dict of tensors (nor one under 'model')")
    return obj, {}


def _export_prefix(encoder: nn.Module) -> str:
    """Where the encoder's exported (timm) keys sit in its own state dict: `""` for a ViT, `body.` for a CNN."""
    own, exported = set(encoder.state_dict()), list(encoder.export_state())
    for prefix in sorted({k[: len(k) - len(exported[0])] for k in own if k.endswith(exported[0])}, key=len):
        if all(prefix + k in own for k in exported):
            return prefix
    return ""


def _check_vitmae_config(config: dict, source: InitSource, method: nn.Module) -> None:
    if not config:
        return
    if config.get("model_type", "vit_mae") != "vit_mae":
        raise WarmStartError(f"{FIELD} {source.spec}: config.json's model_type is {config['model_type']!r}, not "
                             "'vit_mae' (a ViTMAEForPreTraining folder)")
    if config.get("hidden_act", "gelu") != "gelu":
        raise WarmStartError(f"{FIELD} {source.spec}: hidden_act {config['hidden_act']!r} is not supported "
                             "(mim's ViT uses exact 'gelu')")
    eps, spec = config.get("layer_norm_eps"), getattr(getattr(method, "encoder", None), "spec", None)
    if eps is not None and spec is not None and getattr(spec, "norm_eps", eps) != eps:
        log.warning("%s %s: config.json has layer_norm_eps %g, this model %g (set model.norm_eps to match exactly)",
                    FIELD, source.spec, eps, spec.norm_eps)


# -- loading them --------------------------------------------------------------------------------------------------
def apply_state(method: nn.Module, state: dict[str, torch.Tensor], origin: str, layout: str) -> WarmStart:
    """Load `state` (our keys) into `method` where it fits; see the module docstring for the rules."""
    own = method.state_dict()
    params = dict(method.named_parameters())
    skip = tuple(external_prefixes(method))
    load: dict[str, torch.Tensor] = {}
    notes, unexpected, mismatch = [], [], []
    for key, value in state.items():
        if key not in own or (skip and key.startswith(skip)):
            unexpected.append(key)
            continue
        target = own[key]
        if value.shape == target.shape:
            load[key] = value
        elif key.endswith("pos_embed") and value.ndim == 3 and value.shape[::2] == target.shape[::2]:
            fixed = key not in params or not params[key].requires_grad
            if fixed:
                notes.append(f"{key}: the file's {_grid(value)} grid, this model's fixed sin-cos table for "
                             f"{_grid(target)} kept")
            else:
                load[key] = _resample(value, target)
                notes.append(f"{key}: resampled from a {_grid(value)} grid to {_grid(target)}")
        elif key.startswith("decoder.pred.") and value.shape[1:] == target.shape[1:]:
            notes.append(f"{key} not loaded: the file predicts {value.shape[0]} values per patch, this method "
                         f"{target.shape[0]} (another target)")
        else:
            mismatch.append(key)
    loaded_encoder = any(k.startswith("encoder.") for k in load)
    if any(k.startswith("encoder.") for k in state) and not loaded_encoder and hasattr(method, "encoder"):
        raise WarmStartError(f"{FIELD} {origin}: none of the file's encoder tensors fit this {_name(method)} model's "
                             f"encoder ({type(method.encoder).__name__}; file keys such as "
                             f"{', '.join(sorted(k for k in state if k.startswith('encoder.'))[:3])})")
    if mismatch:
        key = sorted(mismatch, key=lambda k: (not k.startswith("encoder."), k))[0]
        raise WarmStartError(f"{FIELD} {origin}: {key} is {list(state[key].shape)} in the file but "
                             f"{list(own[key].shape)} in this {_name(method)} model; {_hint(key, state, own[key])}")
    if not load:
        raise WarmStartError(f"{FIELD} {origin}: none of its {len(state)} tensors fit this {_name(method)} model "
                             f"(file keys such as {', '.join(sorted(state)[:3])})")
    method.load_state_dict(load, strict=False)
    parts: dict[str, int] = {}
    for key in own:  # the model's order: encoder first
        if key in load:
            parts[key.split(".")[0]] = parts.get(key.split(".")[0], 0) + 1
    missing = sorted(k for k in own if k not in load and k not in state and not (skip and k.startswith(skip)))
    return WarmStart(layout, parts, missing, sorted(unexpected), notes)


def warm_start(method: nn.Module, source: InitSource) -> WarmStart:
    """Read `source`, load it into `method` and log what was loaded, resampled, missing and unexpected."""
    state, layout = read_init_state(source, method)
    result = apply_state(method, state, source.spec, layout)
    loaded = ", ".join(f"{part} ({n} tensors)" for part, n in result.parts.items())
    log.info("%s %s (%s): loaded %s; missing (kept as initialised) %d%s; unexpected (ignored) %d%s", FIELD,
             source.spec, layout, loaded, len(result.missing), _first(result.missing), len(result.unexpected),
             _first(result.unexpected))
    for note in result.notes:
        log.info("%s: %s", FIELD, note)
    return result


def _first(keys: list[str], n: int = 5) -> str:
    return f": {', '.join(keys[:n])}{', ...' if len(keys) > n else ''}" if keys else ""


def _name(method: nn.Module) -> str:
    return str(getattr(method, "name", "") or type(method).__name__)


def _grid(pos: torch.Tensor) -> str:
    side, _ = _side(pos.shape[1])
    return f"{side}x{side}"


def _side(tokens: int) -> tuple[int, int]:
    """(grid side, prefix tokens) of a square position table of `tokens` rows (a class token first, or none)."""
    for prefix in (1, 0):
        side = math.isqrt(tokens - prefix)
        if side * side == tokens - prefix:
            return side, prefix
    raise WarmStartError(f"{FIELD}: a position table of {tokens} rows is not a square grid (with a class token)")


def _resample(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    (old, prefix), (new, _) = _side(value.shape[1]), _side(target.shape[1])
    return resample_abs_pos_embed(value.float(), [new, new], [old, old], num_prefix_tokens=prefix).to(value.dtype)


def _hint(key: str, state: dict[str, torch.Tensor], model: torch.Tensor) -> str:
    """Which param makes `key` the file's shape (`state`: the file's tensors, our keys)."""
    file = state[key]
    if key == "encoder.patch_embed.proj.weight":
        if file.shape[2:] != model.shape[2:]:
            return f"set model.patch_size to {file.shape[-1]}"
        if file.shape[1] != model.shape[1]:
            return f"the file's encoder takes {file.shape[1]}-channel images (data.to_rgb)"
    if key.startswith("encoder."):
        if ".mlp.fc" in key and file.shape[-1] == model.shape[-1]:
            return f"set model.mlp_ratio to {file.shape[0] / file.shape[-1]:g}"
        width = state.get("encoder.patch_embed.proj.weight", file.reshape(-1)).shape[0]
        return f"set model.embed_dim (or model.size) to the file's width {width}"
    if key.startswith("decoder."):
        width = state.get("decoder.embed.weight", file.reshape(-1)).shape[0]
        return f"set method.decoder.embed_dim to the file's decoder width {width}"
    return "this part of the method has another shape in the file (its method params differ)"
