"""A timm-native folder of an exported encoder: `config.json` + `model.safetensors` (+ a `README.md` model card), so
that `timm.create_model("local-dir:DIR", pretrained=True)` (or `"hf-hub:org/name"` once pushed) builds it with no
other argument and `model(x)` gives the pooled features mim's k-NN / linear evaluation uses.

config.json follows the layout timm writes (`timm.models._hub.save_config_for_hf`) and reads
(`load_model_config_from_path`): `architecture` (a registered timm entrypoint), `num_classes`, `model_args` (every
shape argument, overriding the entrypoint's defaults), `pretrained_cfg` (mean, std, input size, crop,
interpolation; only `PretrainedCfg` fields, which timm validates) and a `mim` block timm ignores.

Names: a ViT whose shape is a standard timm ViT (e.g. ViT-B/16 at 224 px) is exported under that name. Any other
ViT is built by timm's reference ViT constructor `vit_base_patch16_224` with every shape argument in `model_args`;
its real shape is in the pretrained tag, the description, the `mim` block, the model card and the export's log
line (timm cannot build a ViT from a name that is not registered). A CNN keeps its timm name (its depth and block
layout are that model's); widths or dilation that differ from the default are named the same way. The
hierarchical (MixMIM) encoder is refused: no timm model computes what it computes (see `HIER_REFUSAL`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from mim.io import atomic_write, write_text
from mim.models.cnn import CnnSpec
from mim.models.export import load_encoder, read_metadata, write_safetensors
from mim.models.vit import ViTSpec

Pool = Literal["cls", "mean"]
log = logging.getLogger("mim.export")

# timm's ViT families: name -> (embed_dim, depth, num_heads); with mlp_ratio 4, qkv bias and a class token
VIT_FAMILIES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
                "huge": (1280, 32, 16)}
VIT_CONSTRUCTOR = "vit_base_patch16_224"  # builds a non-standard ViT: model_args override every shape argument
TIMM_LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorm; config.json cannot set another
EPS_TOLERANCE = 1e-4  # another eps is exported when it changes the features by at most this (relative)
# CNN keywords that leave the shape and the inference computation of the named model as timm builds it by default
_CNN_NEUTRAL_KWARGS = {"drop_rate", "drop_block_rate", "zero_init_last"}
HIER_REFUSAL = ("a hierarchical (MixMIM) encoder has no timm architecture that computes the same features: timm's "
                "Swin shifts every second block's windows and has no absolute position embedding, so its weights would "
                "load into a different network; load it with "
                "mim.models.export.load_encoder")


@dataclass(frozen=True)
class TimmExport:
    """What `mim export` writes: config.json's content, the weights and their metadata, the model card."""

    config: dict
    state: dict[str, torch.Tensor]
    metadata: dict[str, str]
    card: str

    @property
    def summary(self) -> str:
        """One line: the timm name, the real shape and the features `model(x)` gives."""
        cfg, m = self.config, self.config["mim"]
        built = (f"timm's {cfg['architecture']} (its own shape: {m['shape']})" if m["standard_shape"] else
                 f"timm's {cfg['architecture']} constructor with model_args for {m['shape']} (not that model's shape)")
        return f"{built}, tag {cfg['pretrained_cfg']['tag']}; model(x) gives the {m['features']}"


def standard_vit_name(spec: ViTSpec, img_size: int) -> str | None:
    """The registered timm ViT whose default shape is exactly `spec`'s at `img_size` (vit_base_patch16_224 for
    ViT-B/16 at 224 px), or None."""
    import timm

    dims = tuple(spec.resolved().values())
    family = next((f for f, d in VIT_FAMILIES.items() if d == dims), None)
    if family is None or spec.mlp_ratio != 4.0 or not spec.qkv_bias or spec.in_chans != 3:
        return None
    name = f"vit_{family}_patch{spec.patch_size}_{img_size}"
    return name if timm.is_model(name) else None


def eps_gap(encoder: torch.nn.Module, pool: Pool) -> float:
    """The largest change, relative to the features' scale, that timm's LayerNorm eps makes to `encoder`'s pooled
    features on a seeded random input (HuggingFace ViTs use 1e-12, timm 1e-6)."""
    spec = encoder.spec
    x = torch.randn(4, spec.in_chans, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(0))
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    with torch.no_grad():
        own = encoder.eval().pooled(x, pool)
        saved = [m.eps for m in norms]
        for m in norms:
            m.eps = TIMM_LAYER_NORM_EPS
        try:
            timm_like = encoder.pooled(x, pool)
        finally:
            for m, eps in zip(norms, saved, strict=True):
                m.eps = eps
    return float((own - timm_like).abs().max() / own.abs().max().clamp_min(1e-12))


def _vit(spec: ViTSpec, img_size: int, pool: Pool) -> tuple[str, dict, str, str, bool]:
    """(architecture, model_args, shape, short shape, standard) of a ViT whose `model(x)` is `pooled(x, pool)`."""
    d = spec.resolved()
    shape = (f"ViT embed_dim {d['embed_dim']}, depth {d['depth']}, {d['num_heads']} heads, patch {spec.patch_size}, "
             f"{img_size} px, {spec.in_chans} channels, mlp_ratio {spec.mlp_ratio:g}")
    short = (f"w{d['embed_dim']}_d{d['depth']}_h{d['num_heads']}_p{spec.patch_size}_{img_size}px"
             + (f"_mlp{spec.mlp_ratio:g}" if spec.mlp_ratio != 4.0 else "")
             + (f"_c{spec.in_chans}" if spec.in_chans != 3 else "") + ("" if spec.qkv_bias else "_noqkvbias"))
    args = {"img_size": img_size, "patch_size": spec.patch_size, "in_chans": spec.in_chans, **d,
            "mlp_ratio": spec.mlp_ratio, "qkv_bias": spec.qkv_bias, "class_token": True, "reg_tokens": 0,
            "no_embed_class": False, "pos_embed": "learn", "dynamic_img_size": False, "num_classes": 0,
            # the pooled feature of mim's evaluation: the class token, or the mean patch token after the final norm
            # (timm's "avg" moves the norm after the pool unless fc_norm is False)
            "global_pool": "token" if pool == "cls" else "avg", "fc_norm": False}
    name = standard_vit_name(spec, img_size)
    return name or VIT_CONSTRUCTOR, args, shape, short, name is not None


def _cnn(spec: CnnSpec) -> tuple[str, dict, str, str, bool]:
    """(architecture, model_args, shape, short shape, standard) of a timm CNN; `model(x)` is the global average of
    its final map."""
    extra = {k: v for k, v in spec.kwargs.items() if k not in _CNN_NEUTRAL_KWARGS}
    parts = [f"{k} {v}" for k, v in extra.items()] + ([f"output stride {spec.output_stride}"]
                                                       if spec.output_stride != 32 else [])
    shape = f"{spec.name}" + (f" with {', '.join(parts)}" if parts else "") + f", {spec.in_chans} channels"
    args = {"in_chans": spec.in_chans, "output_stride": spec.output_stride, **spec.kwargs, "num_classes": 0,
            "global_pool": "avg"}
    short = "_".join([spec.name, *(f"{k}{_compact(v)}" for k, v in extra.items())]
                     + ([f"os{spec.output_stride}"] if spec.output_stride != 32 else [])
                     + ([f"c{spec.in_chans}"] if spec.in_chans != 3 else []))
    return spec.name, args, shape, short, not parts


def _compact(value: object) -> str:
    return "-".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _slug(text: str) -> str:
    """`text` with only letters, digits, '_' and '-' (a timm tag: no dots, which separate name and tag)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)


def build_timm_export(path: str, pool: Pool, name: str | None = None, img_size: int | None = None,
                      hub_id: str | None = None) -> TimmExport:
    """The timm folder's content for the encoder file `path`. `pool` is the evaluation's pooling (`model(x)` gives
    it); `name` the recipe (default: the file's method); `img_size` the input size (default: the size of the data it
    was trained on, as `mim evaluate` rebuilds it; a ViT's positions are resampled when it differs)."""
    meta = read_metadata(path)
    if meta.get("arch") == "hier":
        raise ValueError(f"{path}: {HIER_REFUSAL}('{path}')")
    data = _data(meta, path)
    size = img_size or data.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"{path}: the metadata's data image_size {size!r} is not a size in pixels; give --img-size")
    encoder = load_encoder(path, img_size=size)
    spec = encoder.spec
    if isinstance(spec, ViTSpec):
        size = spec.img_size
        if spec.norm_eps != TIMM_LAYER_NORM_EPS:
            gap = eps_gap(encoder, pool)
            said = (f"{path}: model.norm_eps {spec.norm_eps:g}: timm's ViT uses LayerNorm eps {TIMM_LAYER_NORM_EPS:g} "
                    f"and config.json cannot set another; that changes the features by {gap:.1e} of their scale")
            if gap > EPS_TOLERANCE:
                raise ValueError(f"{said}, so timm would compute other features: load it with "
                                 "mim.models.export.load_encoder")
            log.warning("%s (within %g: exported)", said, EPS_TOLERANCE)
        arch, args, shape, short, standard = _vit(spec, size, pool)
        features = ("class token after the final norm" if pool == "cls"
                    else "mean of the patch tokens after the final norm")
        input_size, first_conv, classifier = size, "patch_embed.proj", "head"
    elif isinstance(spec, CnnSpec):
        arch, args, shape, short, standard = _cnn(spec)
        features, pool = "global average of the final feature map", "mean"  # a CNN has no class token
        input_size = spec.input_size or size or spec.img_size  # a CNN takes any size: the evaluation's
        first_conv, classifier = _default_cfg_value(arch, "first_conv"), _default_cfg_value(arch, "classifier")
    else:
        raise ValueError(f"{path}: encoder architecture {meta.get('arch')!r} has no timm export")
    mean, std = data.get("mean"), data.get("std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == spec.in_chans):
        raise ValueError(f"{path}: the metadata's data mean {mean!r} / std {std!r} do not give one value per input "
                         f"channel ({spec.in_chans})")
    method, steps = meta.get("method", "unknown"), meta.get("steps", "unknown")
    name = name or method
    tag = f"mim_{_slug(name)}" + ("" if standard else f"_{_slug(short)}")
    note = "" if standard else f" (not the default shape of {arch}: timm builds it from model_args)"
    trained = f"{data.get('source', 'unknown data')} at {data.get('image_size', '?')} px"
    pretrained_cfg = {
        "tag": tag, "custom_load": False, "input_size": [spec.in_chans, input_size, input_size],
        "fixed_input_size": isinstance(spec, ViTSpec), "interpolation": "bilinear", "crop_pct": 1.0,
        "crop_mode": "center", "mean": mean, "std": std, "num_classes": 0, "first_conv": first_conv,
        "classifier": classifier,
        "description": f"{shape}{note}; pre-trained by mim's {name} recipe (method {method}, {steps} steps) on "
                       f"{trained}; model(x) gives the {features}"}
    mim_block = {"format": "mim-timm/1", "recipe": name, "method": method, "steps": steps, "shape": shape,
                 "standard_shape": standard, "pool": pool, "features": features,
                 "encoder_spec": spec.to_dict(), "data": data, "data_digest": meta.get("data_digest")}
    trained_at = json.loads(meta["spec"]).get("img_size")
    if isinstance(spec, ViTSpec) and trained_at != spec.img_size:
        mim_block["input_note"] = (f"pre-trained at {trained_at} px; exported at {spec.img_size} px with its position "
                                   "table resampled (sin-cos: recomputed), as `mim evaluate` rebuilds it")
    if isinstance(spec, CnnSpec) and spec.input_size and spec.input_size != spec.img_size:
        mim_block["input_note"] = (f"trained on {spec.img_size} px images resized (bilinear) to {spec.input_size} px "
                                   "before the stem; give the model inputs of that size")
    config = {"architecture": arch, "num_classes": 0, "num_features": encoder.embed_dim,
              "global_pool": args["global_pool"], "model_args": args, "pretrained_cfg": pretrained_cfg,
              "mim": mim_block}
    # the weights' own spec (the size they were brought to), so `load_encoder` reads model.safetensors as well
    metadata = {**meta, "spec": json.dumps(spec.to_dict()), "timm_kwargs": json.dumps(spec.timm_kwargs())}
    return TimmExport(config=config, state=encoder.export_state(), metadata=metadata,
                      card=model_card(config, hub_id))


def _data(meta: dict[str, str], path: str) -> dict:
    """The data params the file records (source, image_size, mean, std): needed for the normalization."""
    try:
        data = json.loads(meta.get("data") or "null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the metadata has no 'data' record (the mean/std it was trained with), so the "
                         "timm config cannot say how to normalize inputs; export a file written by `mim pretrain`")
    return data


def _default_cfg_value(arch: str, key: str) -> str | None:
    """A field of timm's default pretrained config for `arch` (first_conv, classifier), if it has one."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    return getattr(cfg, key, None) if cfg is not None else None


def model_card(config: dict, hub_id: str | None = None) -> str:
    """README.md for the folder (and the hub page): the real shape, method, data, steps and how to load it."""
    m, p = config["mim"], config["pretrained_cfg"]
    source = f"hf-hub:{hub_id}" if hub_id else "local-dir:PATH/TO/THIS/FOLDER"
    standard = "yes" if m["standard_shape"] else f"no: built by `{config['architecture']}` with `model_args`"
    rows = [("timm architecture", f"`{config['architecture']}`"), ("real shape", m["shape"]),
            ("standard timm shape", standard), ("method (recipe)", f"{m['method']} ({m['recipe']})"),
            ("training steps", str(m["steps"])),
            ("data", f"{m['data'].get('source')} at {m['data'].get('image_size')} px"),
            ("input", f"{p['input_size']}, mean {p['mean']}, std {p['std']}, resize + center crop (bilinear)"),
            ("`model(x)`", f"{config['num_features']}-d features: {m['features']} (mim's k-NN / linear probe "
                           "features)")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""---
library_name: timm
tags: [image-feature-extraction, timm, masked-image-modeling]
---
# {m['recipe']} encoder: {m['shape']}

timm name `{config['architecture']}`, tag `{p['tag']}`.

An image encoder pre-trained with masked image modeling by mim, exported for timm.

| | |
|---|---|
{table}

```python
import timm
model = timm.create_model("{source}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
features = model(transform(image).unsqueeze(0))  # [1, {config['num_features']}]
```

It has no classifier (`num_classes` 0); `timm.create_model(..., num_classes=N)` adds a new head for fine-tuning.
"""


def check_local(out_dir: str) -> None:
    """timm's `local-dir:` reads a folder on this machine: a URL is refused (before any work)."""
    if "://" in out_dir:
        raise ValueError(f"{out_dir}: timm reads a local folder (local-dir:DIR); export there, then copy or --push it")


def write_timm_export(export: TimmExport, out_dir: str) -> None:
    """DIR/config.json, DIR/model.safetensors (the encoder file's metadata kept, so `load_encoder` reads it too) and
    DIR/README.md, each written atomically."""
    check_local(out_dir)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(str(folder / "model.safetensors"), lambda f: write_safetensors(f, export.state, export.metadata))
    write_text(str(folder / "config.json"), json.dumps(export.config, indent=2) + "\n")
    write_text(str(folder / "README.md"), export.card)


def export_for_timm(path: str, out_dir: str, pool: Pool, name: str | None = None, img_size: int | None = None,
                    hub_id: str | None = None) -> TimmExport:
    """Build and write the timm folder of the encoder file `path` (see `build_timm_export`)."""
    check_local(out_dir)
    export = build_timm_export(path, pool, name, img_size, hub_id)
    write_timm_export(export, out_dir)
    return export


