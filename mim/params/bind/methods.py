"""Recipe params -> a method with its encoder, targets (HOG, centroid tokenizer, teacher) and heads."""

from __future__ import annotations

from collections.abc import Callable

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
from mim.models.export import build_encoder
from mim.models.vit import MaskedViT, ViTSpec, build_vit
from mim.params.bind.encoders import encoder_spec
from mim.params.methods import METHOD_NAMES, CimParams
from mim.params.models import CnnParams, HierParams, PretrainParams, ViTParams
from mim.targets.centroids import CentroidTokenizer
from mim.targets.hog import HogTarget
from mim.targets.teacher import load_teacher_dir


def _vit(params: PretrainParams, in_chans: int) -> MaskedViT:
    """The method's ViT encoder; a clear error for another architecture where the method needs tokens (mask tokens
    or MAE-style visible-token encoding)."""
    if not isinstance(params.model, ViTParams):
        raise ValueError(f"model.arch: {params.method.name} needs a ViT encoder (model.arch: vit), got "
                         f"{params.model.arch!r}; CNN encoders pre-train with cim, the hierarchical one with mixmim")
    return build_vit(encoder_spec(params.model, params.image_size, in_chans))


def _hog(params: PretrainParams, in_chans: int) -> HogTarget:
    h = params.method.hog
    return HogTarget(params.model.patch_size, in_chans, mean=params.data.mean, std=params.data.std, cell=h.cell,
                     bins=h.bins, flavour=h.flavour)


def _mae(params: PretrainParams, in_chans: int) -> MAE:
    m, d = params.method, params.method.decoder
    return build_mae(_vit(params, in_chans), mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss,
                     decoder_dim=d.embed_dim, decoder_depth=d.depth, decoder_heads=d.num_heads,
                     target=_hog(params, in_chans) if m.target == "hog" else None, views=m.views,
                     mask_count=m.mask_count)


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
                         teacher_cache_mb=m.teacher_cache_mb, mask_count=m.mask_count)


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
                      decoder_heads=d.num_heads, lr_per_mask_ratio=m.lr_per_mask_ratio, mask_count=m.mask_count)


METHOD_BUILDERS: dict[str, Callable[[PretrainParams, int], MIMMethod]] = {
    "mae": _mae, "simmim": _simmim, "ccvit": _ccvit, "img2vec": _img2vec, "cim": _cim, "mixmim": _mixmim,
    "dmjd": _dmjd,
}
assert tuple(METHOD_BUILDERS) == METHOD_NAMES, "every method of the params union has one builder, in order"


def build_method(params: PretrainParams, in_chans: int) -> MIMMethod:
    """The method `params.method.name` names, with its encoder, targets and heads, from validated params."""
    return METHOD_BUILDERS[params.method.name](params, in_chans)
