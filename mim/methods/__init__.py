"""Pre-training methods, one file each. `METHODS[name](params, in_chans)` builds one from validated params."""

from __future__ import annotations

from collections.abc import Callable

from mim.methods.base import MIMMethod, StepOutput
from mim.methods.mae import MAE, build_mae
from mim.methods.simmim import SimMIM, build_simmim
from mim.models.vit import build_vit
from mim.params import MaeParams, PretrainParams, SimMimParams


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


METHODS: dict[str, Callable[[PretrainParams, int], MIMMethod]] = {"mae": _mae, "simmim": _simmim}


def build_method(params: PretrainParams, in_chans: int = 3) -> MIMMethod:
    """The method named by `params.method.name`, built from validated params."""
    return METHODS[params.method.name](params, in_chans)


__all__ = ["MAE", "METHODS", "MIMMethod", "SimMIM", "StepOutput", "build_method"]
