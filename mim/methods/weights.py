"""The full model file (`model.safetensors`): a method's whole state (encoder, decoder, heads) beside its encoder.

What pre-training keeps so that a run can continue from it (`model.init_from`) or show reconstructions later.
Frozen teachers (`mim.targets.teacher.Teacher` submodules: Img2Vec's, DMJD's feature target) are left out: they
are rebuilt from the run's teacher folder, which the metadata names, and would make the file many times larger
than the model. The metadata also holds the method name, the resolved recipe and the encoder's architecture, so a
loader can check what it reads.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from mim.io import atomic_write, read_bytes
from mim.models.export import read_safetensors, safetensors_metadata, write_safetensors
from mim.models.state import load_state_strict
from mim.targets.teacher import Teacher

MODEL_FORMAT = "mim-model/1"


def external_prefixes(method: nn.Module) -> list[str]:
    """State-dict prefixes of the parts another input supplies (frozen teachers), e.g. `["teacher."]`."""
    return [f"{name}." for name, module in method.named_modules() if name and isinstance(module, Teacher)]


def model_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """The method's state dict less its `external_prefixes`, detached, contiguous, on the CPU."""
    skip = tuple(external_prefixes(method))
    return {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()
            if not (skip and k.startswith(skip))}


def save_model(method: nn.Module, path: str, metadata: dict[str, str]) -> None:
    """Write `method`'s `model_state` to `path` (safetensors, atomically) with `metadata` beside mim's own keys."""
    encoder = getattr(method, "encoder", None)
    meta = {
        **metadata,
        "format": MODEL_FORMAT,
        "method": str(getattr(method, "name", type(method).__name__)),
        "excluded": json.dumps(external_prefixes(method)),
        **({"encoder_spec": json.dumps(encoder.spec.to_dict())} if hasattr(encoder, "spec") else {}),
    }
    state = model_state(method)
    atomic_write(path, lambda f: write_safetensors(f, state, meta))


def read_weights_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of any safetensors file (ours or another project's)."""
    data = read_bytes(path, "weights")
    return read_safetensors(data, path), safetensors_metadata(data, path)


def load_model(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state and metadata of a full model file; a file of another kind is a ValueError naming it."""
    state, meta = read_weights_file(path)
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a full model written by mim (metadata format {meta.get('format')!r})")
    return state, meta


def load_full_state(method: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load a full model's `state` (read from `path`, named in errors) into `method`, strictly: every key but the
    parts another input supplies (`external_prefixes`, kept as built)."""
    skip = tuple(external_prefixes(method))
    supplied = {k: v for k, v in method.state_dict().items() if skip and k.startswith(skip)}
    load_state_strict(method, {**state, **supplied}, path)
