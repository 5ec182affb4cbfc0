"""Validated parameters (pydantic, extra="forbid") and their YAML loading."""

from mim.params.evaluation import EvalParams, FinetuneParams, KnnParams, LinearParams, TransferParams
from mim.params.files import (
    DEFAULT_PARAMS_DIR,
    check_dir,
    load_file,
    load_one_off,
    load_pretrain,
    load_with_data,
    model_for,
    resolved,
    split_overrides,
)
from mim.params.loading import ParamsError, apply_overrides, load_params, read_yaml, validate
from mim.params.methods import (
    METHOD_NAMES,
    CCViTParams,
    CimParams,
    DecoderParams,
    DmjdParams,
    HogParams,
    Img2VecParams,
    MaeParams,
    MixMimParams,
    SimMimParams,
)
from mim.params.models import (
    AugmentParams,
    CnnParams,
    DataParams,
    HierParams,
    LauncherParams,
    OptimParams,
    PretrainParams,
    RecipeParams,
    ScheduleParams,
    TrainParams,
    ViTParams,
)
from mim.params.pipeline import PipelineParams, RecipeInput
from mim.params.targets import DiversityParams, TeacherParams, TeacherSpec, TokenizerParams

__all__ = [
    "CCViTParams", "CimParams", "CnnParams", "DiversityParams", "DmjdParams", "HierParams", "HogParams",
    "MixMimParams", "Img2VecParams",
    "TeacherParams", "TeacherSpec", "FinetuneParams", "TransferParams",
    "TokenizerParams",
    "DEFAULT_PARAMS_DIR", "METHOD_NAMES", "RecipeParams", "check_dir", "load_file", "load_one_off", "load_pretrain",
    "load_with_data", "model_for", "resolved", "split_overrides",
    "AugmentParams", "DataParams", "DecoderParams", "EvalParams", "KnnParams", "LauncherParams", "LinearParams",
    "MaeParams", "OptimParams", "ParamsError", "PretrainParams", "ScheduleParams", "SimMimParams", "TrainParams",
    "PipelineParams", "RecipeInput", "ViTParams", "apply_overrides", "load_params", "read_yaml", "validate",
]
