"""The one place validated params become library objects: encoders, methods, augmentations, teachers, training
and evaluation settings. The library never imports `mim.params`; this module reads params and calls it."""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from mim.data import BatchAugment, ImageTensors, load_dataset
from mim.engine.config import OptimConfig, ScheduleConfig, TrainConfig
from mim.engine.distributed import init_distributed
from mim.engine.files import PretrainFiles
from mim.engine.pretrain import pretrain
from mim.engine.runtime import resolve_device, set_deterministic
from mim.engine.trainer import MetricsCallback, TrainResult
from mim.evaluation.evaluate import ProbeConfig
from mim.io import write_text
from mim.methods import (
    CIM,
    DMJD,
    MAE,
    CCViT,
    Img2Vec,
    MIMMethod,
    MixMIM,
    SimMIM,
    build_ccvit,
    build_cim,
    build_dmjd,
    build_img2vec,
    build_mae,
    build_mixmim,
    build_simmim,
)
from mim.models.cnn import CnnSpec
from mim.models.encoder import Encoder
from mim.models.export import build_encoder
from mim.models.hier import HierSpec
from mim.models.vit import MaskedViT, ViTSpec, build_vit
from mim.params.evaluation import EvalParams
from mim.params.models import (
    METHOD_NAMES,
    CimParams,
    CnnParams,
    DataParams,
    HierParams,
    ModelParams,
    PretrainParams,
    ViTParams,
)
from mim.params.targets import TeacherSpec
from mim.rng import derive_seed, generator_for
from mim.targets.centroids import CentroidTokenizer
from mim.targets.hog import HogTarget
from mim.targets.teacher import TeacherSource, load_teacher_dir


# -- data ------------------------------------------------------------------------------------------
def augment(data: DataParams, image_size: int | None = None) -> BatchAugment:
    """The training augmentation `data` describes, to `image_size` (default the data's); `.eval()` of it is the
    evaluation transform."""
    a = data.augment
    return BatchAugment(out_size=image_size or data.image_size, scale=a.scale, ratio=a.ratio, hflip_prob=a.hflip,
                        mean=data.mean, std=data.std, to_rgb=data.to_rgb)


def load_split(data: DataParams, split: str) -> ImageTensors:
    """One split of `data.source`, decoded at `data.image_size`."""
    return load_dataset(data.source, split, size=data.image_size, strict=data.strict, seed=data.seed)


def train_images(data: DataParams) -> ImageTensors:
    """The training split, cut to the seeded `subset` when one is asked for (what `mim prepare` stores)."""
    train = load_split(data, data.train_split)
    return train.subset(data.subset, generator_for(data.seed, "subset")) if data.subset is not None else train


# -- encoders --------------------------------------------------------------------------------------
def encoder_spec(model: ModelParams, image_size: int, in_chans: int) -> ViTSpec | CnnSpec | HierSpec:
    """The architecture `model` names, for `image_size` inputs of `in_chans` channels."""
    if isinstance(model, CnnParams):
        return CnnSpec(name=model.name, img_size=image_size, in_chans=in_chans, input_size=model.input_size,
                       output_stride=model.output_stride, kwargs=dict(model.kwargs), drop_path=model.drop_path)
    fields = model.model_dump(exclude={"arch"})
    return (HierSpec if isinstance(model, HierParams) else ViTSpec)(img_size=image_size, in_chans=in_chans, **fields)


def random_init_encoder(spec: ViTSpec | CnnSpec | HierSpec, seed: int, purpose: str) -> Encoder:
    """A randomly initialised encoder of `spec`'s architecture (the baselines: random-init evaluation, fine-tuning
    from scratch), its init seeded by (`seed`, `purpose`)."""
    torch.manual_seed(derive_seed(seed, purpose))
    return build_encoder(spec)


def _vit(params: PretrainParams, in_chans: int) -> MaskedViT:
    """The method's ViT encoder; a clear error for another architecture where the method needs tokens (mask tokens
    or MAE-style visible-token encoding)."""
    if not isinstance(params.model, ViTParams):
        raise ValueError(f"model.arch: {params.method.name} needs a ViT encoder (model.arch: vit), got "
                         f"{params.model.arch!r}; CNN encoders pre-train with cim, the hierarchical one with mixmim")
    return build_vit(encoder_spec(params.model, params.image_size, in_chans))


# -- targets ---------------------------------------------------------------------------------------
def teacher_source(spec: TeacherSpec) -> TeacherSource:
    return TeacherSource(kind=spec.kind, name=spec.name, weights=spec.weights, level=spec.level,
                         input_size=spec.input_size, token_norm=spec.token_norm)


def _hog(params: PretrainParams, in_chans: int) -> HogTarget:
    h = params.method.hog
    return HogTarget(params.model.patch_size, in_chans, mean=params.data.mean, std=params.data.std, cell=h.cell,
                     bins=h.bins, flavour=h.flavour)


# -- methods ---------------------------------------------------------------------------------------
def _mae(params: PretrainParams, in_chans: int) -> MAE:
    m, d = params.method, params.method.decoder
    return build_mae(_vit(params, in_chans), mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss,
                     decoder_dim=d.embed_dim, decoder_depth=d.depth, decoder_heads=d.num_heads,
                     target=_hog(params, in_chans) if m.target == "hog" else None, views=m.views)


def _simmim(params: PretrainParams, in_chans: int) -> SimMIM:
    m = params.method
    return build_simmim(_vit(params, in_chans), mask_ratio=m.mask_ratio, mask_unit_size=m.mask_unit_size,
                        target=_hog(params, in_chans) if m.target == "hog" else None, views=m.views)


def _ccvit(params: PretrainParams, in_chans: int) -> CCViT:
    m = params.method
    return build_ccvit(_vit(params, in_chans), CentroidTokenizer.load(m.tokenizer), mean=params.data.mean,
                       std=params.data.std, mask_ratio=m.mask_ratio, min_block=m.min_block,
                       replace_ratio=m.replace_ratio, pixel_layer=m.pixel_layer, pixel_depth=m.pixel_depth,
                       ce_weight=m.ce_weight, mse_weight=m.mse_weight)


def _img2vec(params: PretrainParams, in_chans: int) -> Img2Vec:
    m, d = params.method, params.method.decoder
    encoder = _vit(params, in_chans)
    teacher, _ = load_teacher_dir(m.teacher, encoder.grid, params.data.mean, params.data.std)
    return build_img2vec(encoder, teacher, mask_ratio=m.mask_ratio, loss=m.loss, beta=m.beta, decoder_dim=d.embed_dim,
                         decoder_depth=d.depth, decoder_heads=d.num_heads, teacher_cache=m.teacher_cache,
                         teacher_cache_mb=m.teacher_cache_mb)


def _cim(params: PretrainParams, in_chans: int) -> CIM:
    m: CimParams = params.method
    size, patch = params.image_size, params.model.patch_size
    cnn = isinstance(params.model, CnnParams)
    if isinstance(params.model, HierParams):
        raise ValueError("model.arch: cim needs a ViT or a CNN enhancer (model.arch: vit or cnn), got 'hier'")
    encoder = build_encoder(encoder_spec(params.model, size, in_chans))
    g = m.generator
    depth = g.depth or (2 if cnn else max(1, round(len(encoder.blocks) / 3)))
    generator = build_vit(ViTSpec(img_size=size, patch_size=patch, in_chans=in_chans, embed_dim=g.embed_dim,
                                  depth=depth, num_heads=g.num_heads))
    return build_cim(encoder, generator, CentroidTokenizer.load(m.tokenizer), mean=params.data.mean,
                     std=params.data.std, patch_size=patch, objective=m.objective, mask_ratio=m.mask_ratio,
                     min_block=m.min_block, temperature=m.temperature, decode_all=m.decode_all, window=m.window,
                     enhancer_weight=m.enhancer_weight, generator_lr_scale=g.lr_scale,
                     generator_weight_decay=g.weight_decay)


def _mixmim(params: PretrainParams, in_chans: int) -> MixMIM:
    m, d = params.method, params.method.decoder
    if not isinstance(params.model, HierParams):
        raise ValueError(f"model.arch: mixmim needs the hierarchical encoder (model.arch: hier), got "
                         f"{params.model.arch!r}")
    return build_mixmim(build_encoder(encoder_spec(params.model, params.image_size, in_chans)),
                        mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss, decoder_dim=d.embed_dim,
                        decoder_depth=d.depth, decoder_heads=d.num_heads)


def _dmjd(params: PretrainParams, in_chans: int) -> DMJD:
    m, d = params.method, params.method.decoder
    encoder = _vit(params, in_chans)
    if m.target == "teacher":
        target, _ = load_teacher_dir(m.teacher, encoder.grid, params.data.mean, params.data.std)
    else:
        target = _hog(params, in_chans)
    return build_dmjd(encoder, target, mask_ratio=m.mask_ratio, views=m.views, unit=m.unit,
                      visible_weight=m.visible_weight, beta=m.beta, decoder_dim=d.embed_dim, decoder_depth=d.depth,
                      decoder_heads=d.num_heads, lr_per_mask_ratio=m.lr_per_mask_ratio)


METHOD_BUILDERS: dict[str, Callable[[PretrainParams, int], MIMMethod]] = {
    "mae": _mae, "simmim": _simmim, "ccvit": _ccvit, "img2vec": _img2vec, "cim": _cim, "mixmim": _mixmim,
    "dmjd": _dmjd,
}
assert tuple(METHOD_BUILDERS) == METHOD_NAMES, "every method of the params union has one builder, in order"


def build_method(params: PretrainParams, in_chans: int) -> MIMMethod:
    """The method `params.method.name` names, with its encoder, targets and heads, from validated params."""
    return METHOD_BUILDERS[params.method.name](params, in_chans)


# -- training and evaluation settings -------------------------------------------------------------
def train_config(params: PretrainParams) -> TrainConfig:
    t, o, s = params.train, params.optim, params.schedule
    signature = json.dumps({"method": params.method.model_dump(), "model": params.model.model_dump(),
                            "image_size": params.image_size}, sort_keys=True)
    return TrainConfig(
        batch_size=t.batch_size, accum_steps=t.accum_steps, epochs=t.epochs, steps=t.steps, seed=t.seed, amp=t.amp,
        compile=t.compile, ckpt_every=t.ckpt_every, log_every_s=t.log_every_s, log_every_steps=t.log_every_steps,
        on_device=params.data.on_device, signature=signature,
        optim=OptimConfig(base_lr=o.base_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                          clip_grad=o.clip_grad, fused=o.fused),
        schedule=ScheduleConfig(warmup_fraction=s.warmup_fraction, warmup_steps=s.warmup_steps,
                                min_lr_ratio=s.min_lr_ratio))


def probe_config(params: EvalParams) -> ProbeConfig:
    k, lp = params.knn, params.linear
    return ProbeConfig(pool=params.pool, batch_size=params.batch_size, device=params.device, seed=params.seed,
                       knn_k=k.k, knn_temperature=k.temperature, linear_epochs=lp.epochs,
                       linear_batch_size=lp.batch_size, linear_lr=lp.lr, linear_weight_decay=lp.weight_decay,
                       linear_optimizer=lp.optimizer)


# -- a pre-training run ----------------------------------------------------------------------------
PICTURE_COUNT = 8  # held-out images in the reconstruction grid


def pretrain_run(params: PretrainParams, files: PretrainFiles, params_file: str, *, data: ImageTensors | None = None,
          held_out: ImageTensors | None = None, resume: bool,
          on_metrics: MetricsCallback | None = None) -> TrainResult:
    """One pre-training run from params, the same for the pipeline stage and a one-off run: set up the device
    (and DDP), build `params`' method and train it on `data` (default: `params.data`'s training split), writing
    `files` and the resolved params to `params_file`. The reconstruction grid shows `held_out`'s first images
    (the training data's without it)."""
    t = params.train
    device = resolve_device(t.device)
    dist = init_distributed(device.type)
    if dist.enabled:
        device = resolve_device(t.device, dist.local_rank)
    set_deterministic(t.deterministic)
    data = data if data is not None else train_images(params.data)
    aug = augment(params.data, params.image_size)
    torch.manual_seed(derive_seed(t.seed, "init"))  # same initial weights on every rank
    method = build_method(params, aug.out_channels(data.images.shape[1]))
    if dist.is_main:
        write_text(params_file, params.model_dump_json(indent=2) + "\n")
    pictures = (held_out if held_out is not None else data).images[:PICTURE_COUNT]
    return pretrain(method, data, aug, train_config(params), files, device=device, dist=dist, resume=resume,
                    picture_images=pictures, on_metrics=on_metrics,
                    export_metadata={"data": params.data.model_dump_json(), "data_digest": data.digest()})
