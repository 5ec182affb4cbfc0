"""Model params -> encoder architectures and randomly initialised encoders."""

from __future__ import annotations

import torch

from mim.models.cnn import CnnSpec
from mim.models.encoder import Encoder
from mim.models.export import build_encoder
from mim.models.hier import HierSpec
from mim.models.vit import ViTSpec
from mim.params.models import CnnParams, HierParams, ModelParams
from mim.rng import derive_seed


def encoder_spec(model: ModelParams, image_size: int, in_chans: int) -> ViTSpec | CnnSpec | HierSpec:
    """The architecture `model` names, for `image_size` inputs of `in_chans` channels."""
    if isinstance(model, CnnParams):
        return CnnSpec(name=model.name, img_size=image_size, in_chans=in_chans, input_size=model.input_size,
                       output_stride=model.output_stride, kwargs=dict(model.kwargs), drop_path=model.drop_path)
    fields = model.model_dump(exclude={"arch", "init_from"})
    return (HierSpec if isinstance(model, HierParams) else ViTSpec)(img_size=image_size, in_chans=in_chans, **fields)


def random_init_encoder(spec: ViTSpec | CnnSpec | HierSpec, seed: int, purpose: str) -> Encoder:
    """A randomly initialised encoder of `spec`'s architecture (the baselines: random-init evaluation, fine-tuning
    from scratch), its init seeded by (`seed`, `purpose`)."""
    torch.manual_seed(derive_seed(seed, purpose))
    return build_encoder(spec)
