"""Pre-training methods, one file each. `METHODS[name](params, in_chans)` builds one from validated params."""

from __future__ import annotations

from collections.abc import Callable

from mim.methods.base import MIMMethod, StepOutput
from mim.methods.ccvit import CCViT, build_ccvit
from mim.methods.cim import CIM, build_cim
from mim.methods.dmjd import DMJD, build_dmjd
from mim.methods.img2vec import Img2Vec, build_img2vec
from mim.methods.mae import MAE, build_mae
from mim.methods.mixmim import MixMIM, build_mixmim
from mim.methods.simmim import SimMIM, build_simmim
from mim.models.cnn import build_cnn
from mim.models.hier import build_hier
from mim.models.vit import MaskedViT, ViTSpec, build_vit
from mim.params import (
    CCViTParams,
    CimParams,
    DmjdParams,
    Img2VecParams,
    MaeParams,
    MixMimParams,
    PretrainParams,
    SimMimParams,
)
from mim.targets.centroids import CentroidTokenizer
from mim.targets.hog import HogTarget
from mim.targets.teacher import load_teacher_dir


def _vit(params: PretrainParams, in_chans: int) -> MaskedViT:
    """The method's ViT encoder; a clear error for a CNN model where the method needs tokens (mask tokens or
    MAE-style visible-token encoding)."""
    if params.model.arch != "vit":
        raise ValueError(f"model.arch: {params.method.name} needs a ViT encoder (model.arch: vit), got "
                         f"{params.model.arch!r}; CNN encoders pre-train with cim, the hierarchical one with mixmim")
    return build_vit(params.model.spec(params.image_size, in_chans))


def _hog(params: PretrainParams, in_chans: int) -> HogTarget:
    h = params.method.hog
    return HogTarget(params.model.patch_size, in_chans, mean=params.data.mean, std=params.data.std, cell=h.cell,
                     bins=h.bins, flavour=h.flavour)


def _mae(params: PretrainParams, in_chans: int) -> MAE:
    m: MaeParams = params.method
    encoder = _vit(params, in_chans)
    d = m.decoder
    return build_mae(encoder, mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss, decoder_dim=d.embed_dim,
                     decoder_depth=d.depth, decoder_heads=d.num_heads,
                     target=_hog(params, in_chans) if m.target == "hog" else None, views=m.views)


def _simmim(params: PretrainParams, in_chans: int) -> SimMIM:
    m: SimMimParams = params.method
    encoder = _vit(params, in_chans)
    return build_simmim(encoder, mask_ratio=m.mask_ratio, mask_unit_size=m.mask_unit_size,
                        target=_hog(params, in_chans) if m.target == "hog" else None, views=m.views)


def _ccvit(params: PretrainParams, in_chans: int) -> CCViT:
    m: CCViTParams = params.method
    encoder = _vit(params, in_chans)
    return build_ccvit(encoder, CentroidTokenizer.load(m.tokenizer), mean=params.data.mean, std=params.data.std,
                       mask_ratio=m.mask_ratio, min_block=m.min_block, replace_ratio=m.replace_ratio,
                       pixel_layer=m.pixel_layer, pixel_depth=m.pixel_depth, ce_weight=m.ce_weight,
                       mse_weight=m.mse_weight)


def _img2vec(params: PretrainParams, in_chans: int) -> Img2Vec:
    m: Img2VecParams = params.method
    encoder = _vit(params, in_chans)
    teacher, _ = load_teacher_dir(m.teacher, encoder.grid, params.data.mean, params.data.std)
    d = m.decoder
    return build_img2vec(encoder, teacher, mask_ratio=m.mask_ratio, loss=m.loss, beta=m.beta, decoder_dim=d.embed_dim,
                         decoder_depth=d.depth, decoder_heads=d.num_heads, teacher_cache=m.teacher_cache,
                         teacher_cache_mb=m.teacher_cache_mb)


def _cim(params: PretrainParams, in_chans: int) -> CIM:
    m: CimParams = params.method
    spec, size = params.model.spec(params.image_size, in_chans), params.image_size
    cnn = params.model.arch == "cnn"
    encoder = build_cnn(spec) if cnn else build_vit(spec)
    g = m.generator
    depth = g.depth or (2 if cnn else max(1, round(len(encoder.blocks) / 3)))
    generator = build_vit(ViTSpec(img_size=size, patch_size=params.model.patch_size, in_chans=in_chans,
                                  embed_dim=g.embed_dim, depth=depth, num_heads=g.num_heads))
    return build_cim(encoder, generator, CentroidTokenizer.load(m.tokenizer), mean=params.data.mean,
                     std=params.data.std, patch_size=params.model.patch_size, objective=m.objective,
                     mask_ratio=m.mask_ratio, min_block=m.min_block, temperature=m.temperature,
                     decode_all=m.decode_all, window=m.window, enhancer_weight=m.enhancer_weight,
                     generator_lr_scale=g.lr_scale, generator_weight_decay=g.weight_decay)


def _mixmim(params: PretrainParams, in_chans: int) -> MixMIM:
    m: MixMimParams = params.method
    if params.model.arch != "hier":
        raise ValueError(f"model.arch: mixmim needs the hierarchical encoder (model.arch: hier), got "
                         f"{params.model.arch!r}")
    d = m.decoder
    return build_mixmim(build_hier(params.model.spec(params.image_size, in_chans)), mask_ratio=m.mask_ratio,
                        norm_pix_loss=m.norm_pix_loss, decoder_dim=d.embed_dim, decoder_depth=d.depth,
                        decoder_heads=d.num_heads)


def _dmjd(params: PretrainParams, in_chans: int) -> DMJD:
    m: DmjdParams = params.method
    encoder = _vit(params, in_chans)
    if m.target == "teacher":
        target, _ = load_teacher_dir(m.teacher, encoder.grid, params.data.mean, params.data.std)
    else:
        target = _hog(params, in_chans)
    d = m.decoder
    return build_dmjd(encoder, target, mask_ratio=m.mask_ratio, views=m.views, unit=m.unit,
                      visible_weight=m.visible_weight, beta=m.beta, decoder_dim=d.embed_dim, decoder_depth=d.depth,
                      decoder_heads=d.num_heads)


METHODS: dict[str, Callable[[PretrainParams, int], MIMMethod]] = {
    "mae": _mae, "simmim": _simmim, "ccvit": _ccvit, "img2vec": _img2vec, "cim": _cim, "mixmim": _mixmim,
    "dmjd": _dmjd,
}


def build_method(params: PretrainParams, in_chans: int = 3) -> MIMMethod:
    """The method named by `params.method.name`, built from validated params."""
    return METHODS[params.method.name](params, in_chans)


__all__ = ["CCViT", "CIM", "DMJD", "Img2Vec", "MAE", "METHODS", "MIMMethod", "MixMIM", "SimMIM", "StepOutput",
           "build_method"]
