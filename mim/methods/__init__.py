"""Pre-training methods, one file each, composed from `mim.masking`, `mim.targets` and `mim.models`.

Each module has the method's `nn.Module` and a `build_<name>` that takes its parts and keyword-only settings
(no defaults: `mim.params` holds them, and `mim.params.bind` calls these builders).
"""

from mim.methods.base import MIMMethod, StepOutput
from mim.methods.ccvit import CCViT, build_ccvit
from mim.methods.cim import CIM, build_cim
from mim.methods.dmjd import DMJD, build_dmjd
from mim.methods.img2vec import Img2Vec, build_img2vec
from mim.methods.mae import MAE, build_mae
from mim.methods.mixmim import MixMIM, build_mixmim
from mim.methods.simmim import SimMIM, build_simmim

__all__ = ["CCViT", "CIM", "DMJD", "MAE", "Img2Vec", "MIMMethod", "MixMIM", "SimMIM", "StepOutput", "build_ccvit",
           "build_cim", "build_dmjd", "build_img2vec", "build_mae", "build_mixmim", "build_simmim"]
