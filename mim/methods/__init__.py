"""Pre-training methods, one file each. `METHODS[name](params, in_chans)` builds one from validated params."""

from __future__ import annotations

from collections.abc import Callable

from mim.methods.base import MIMMethod, StepOutput
from mim.methods.ccvit import CCViT, build_ccvit
from mim.methods.img2vec import Img2Vec, build_img2vec
from mim.methods.mae import MAE, build_mae
from mim.methods.simmim import SimMIM, build_simmim
from mim.models.vit import build_vit
from mim.params import CCViTParams, Img2VecParams, MaeParams, PretrainParams, SimMimParams
from mim.targets.centroids import CentroidTokenizer
from mim.targets.teacher import load_teacher_dir


def _mae(params: PretrainParams, in_chans: int) -> MAE:
    m: MaeParams = params.method
    encoder = build_vit(params.model.spec(params.data.image_size, in_chans))
    d = m.decoder
    return build_mae(encoder, mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss, decoder_dim=d.embed_dim,
                     decoder_depth=d.depth, decoder_heads=d.num_heads)


def _simmim(params: PretrainParams, in_chans: int) -> SimMIM:
    m: SimMimParams = params.method
    encoder = build_vit(params.model.spec(params.data.image_size, in_chans))
    return build_simmim(encoder, mask_ratio=m.mask_ratio, mask_unit_size=m.mask_unit_size)


def _ccvit(params: PretrainParams, in_chans: int) -> CCViT:
    m: CCViTParams = params.method
    encoder = build_vit(params.model.spec(params.data.image_size, in_chans))
    return build_ccvit(encoder, CentroidTokenizer.load(m.tokenizer), mean=params.data.mean, std=params.data.std,
                       mask_ratio=m.mask_ratio, min_block=m.min_block, replace_ratio=m.replace_ratio,
                       pixel_layer=m.pixel_layer, pixel_depth=m.pixel_depth, ce_weight=m.ce_weight,
                       mse_weight=m.mse_weight)


def _img2vec(params: PretrainParams, in_chans: int) -> Img2Vec:
    m: Img2VecParams = params.method
    encoder = build_vit(params.model.spec(params.data.image_size, in_chans))
    teacher, _ = load_teacher_dir(m.teacher, encoder.grid, params.data.mean, params.data.std)
    d = m.decoder
    return build_img2vec(encoder, teacher, mask_ratio=m.mask_ratio, loss=m.loss, beta=m.beta, decoder_dim=d.embed_dim,
                         decoder_depth=d.depth, decoder_heads=d.num_heads)


METHODS: dict[str, Callable[[PretrainParams, int], MIMMethod]] = {"mae": _mae, "simmim": _simmim, "ccvit": _ccvit,
                                                                  "img2vec": _img2vec}


def build_method(params: PretrainParams, in_chans: int = 3) -> MIMMethod:
    """The method named by `params.method.name`, built from validated params."""
    return METHODS[params.method.name](params, in_chans)


__all__ = ["CCViT", "Img2Vec", "MAE", "METHODS", "MIMMethod", "SimMIM", "StepOutput", "build_method"]
