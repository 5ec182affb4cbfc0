"""Validated parameters (pydantic, extra="forbid") and their YAML loading."""

from mim.params.files import (
    DEFAULT_PARAMS_DIR,
    check_dir,
    load_file,
    load_pretrain,
    load_with_data,
    model_for,
    resolved,
    split_overrides,
)
from mim.params.loading import ParamsError, apply_overrides, load_params, read_yaml, validate
from mim.params.models import (
    METHOD_NAMES,
    AugmentParams,
    CCViTParams,
    CimParams,
    CnnParams,
    DataParams,
    DecoderParams,
    DiversityParams,
    EvalParams,
    HierParams,
    Img2VecParams,
    KnnParams,
    LauncherParams,
    LinearParams,
    MaeParams,
    MixMimParams,
    OptimParams,
    PretrainParams,
    RecipeParams,
    ScheduleParams,
    SimMimParams,
    TeacherParams,
    TeacherSpec,
    TokenizerParams,
    TrainParams,
    ViTParams,
)

__all__ = [
    "CCViTParams", "CimParams", "CnnParams", "DiversityParams", "HierParams", "MixMimParams", "Img2VecParams",
    "TeacherParams", "TeacherSpec",
    "TokenizerParams",
    "DEFAULT_PARAMS_DIR", "METHOD_NAMES", "RecipeParams", "check_dir", "load_file", "load_pretrain",
    "load_with_data", "model_for", "resolved", "split_overrides",
    "AugmentParams", "DataParams", "DecoderParams", "EvalParams", "KnnParams", "LauncherParams", "LinearParams",
    "MaeParams", "OptimParams", "ParamsError", "PretrainParams", "ScheduleParams", "SimMimParams", "TrainParams",
    "ViTParams", "apply_overrides", "load_params", "read_yaml", "validate",
]
