"""A trained method back from its files: rebuilt from the resolved params a run wrote (`params.json`), weights from
the full-model file (`model.safetensors`: the whole `MIMMethod` state dict), loaded strictly."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import pydantic
import torch

from mim.data.folder import display_path, list_image_folder, load_image_folder
from mim.io import read_bytes
from mim.methods import MIMMethod
from mim.methods.weights import load_full_state, load_model
from mim.models.export import safetensors_metadata
from mim.params.bind.data import augment
from mim.params.bind.methods import build_method
from mim.params.models import PretrainParams


def load_saved_params(path: Path) -> PretrainParams:
    """The resolved params a pre-training wrote (`params.json`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resolved params there; is {path.parent} a model folder written by "
                                "pre-training (models/<recipe>)?")
    try:
        return PretrainParams.model_validate_json(path.read_text())
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: not the params of this version of mim ({where}: {first['msg']}); re-run "
                         "pre-training") from None


def _in_chans(path: Path, meta: dict[str, str], encoder: Path) -> int:
    """The model input's channels: the full-model file's encoder spec, else the exported encoder's."""
    if "encoder_spec" in meta:
        return int(json.loads(meta["encoder_spec"])["in_chans"])
    if encoder.is_file():
        spec = safetensors_metadata(read_bytes(str(encoder), "exported encoder"), str(encoder)).get("spec")
        if spec:
            return int(json.loads(spec)["in_chans"])
    raise ValueError(f"{path}: its metadata does not say the input channels (in_chans) and there is no "
                     f"{encoder} that does")


def load_saved_method(path: Path, params_file: Path, encoder_file: Path) -> tuple[MIMMethod, PretrainParams]:
    """(the trained method in eval mode on the CPU, its params) from the full-model file `path`, the resolved
    params and the exported encoder beside it (read only for the input channels when `path` does not say them). A
    missing full-model file (a run from before mim saved it) is one clear error."""
    params = load_saved_params(params_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no full-model file; the run predates full-model saving (only the encoder "
                                "was kept): re-run pre-training to reconstruct with it")
    state, meta = load_model(str(path))  # read once: the metadata says how to build the method
    if meta.get("method", params.method.name) != params.method.name:
        raise ValueError(f"{path}: holds a {meta['method']} model but {params_file} names "
                         f"{params.method.name}; the folder mixes two runs: re-run pre-training")
    method = build_method(params, _in_chans(path, meta, encoder_file))
    load_full_state(method, state, str(path))
    return method.eval(), params


def reconstruct_images(method: MIMMethod, params: PretrainParams, images_url: str, out_dir: str, *, seed: int,
                       per_grid: int, device: torch.device) -> list[str]:
    """Pictures of `method` on the user's images (a folder or fsspec URL of image files of any size and format):
    each decoded upright, resized (shorter side) and center-cropped to the model's image size and normalized with
    the data mean/std the run used; then `mim.analysis.reconstruct.write_pictures` into `out_dir`."""
    from mim.analysis.reconstruct import write_pictures  # matplotlib: only where pictures are drawn

    channels = 1 if method.encoder.spec.in_chans == 1 else 3
    loaded = load_image_folder(images_url, size=params.image_size, channels=channels,
                               background=params.data.background)
    fs, paths, _, _ = list_image_folder(images_url)
    skipped = set(loaded.skipped)
    names = [posixpath.basename(p) for p in paths if display_path(fs, p) not in skipped]
    aug = augment(params.data, params.image_size)
    method.to(device)
    x = aug.eval(loaded.images.to(device))
    return write_pictures(method, x, out_dir, seed=seed, mean=aug.mean, std=aug.std, per_grid=per_grid, names=names)
