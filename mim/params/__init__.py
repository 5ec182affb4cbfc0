"""Validated parameters (pydantic, extra="forbid") and their YAML loading."""

from mim.params.loading import ParamsError, apply_overrides, load_params, read_yaml, validate
from mim.params.models import (
    AugmentParams,
    DataParams,
    DecoderParams,
    EvalParams,
    KnnParams,
    LauncherParams,
    LinearParams,
    MaeParams,
    OptimParams,
    PretrainParams,
    ScheduleParams,
    SimMimParams,
    TrainParams,
    ViTParams,
)

__all__ = [
    "AugmentParams", "DataParams", "DecoderParams", "EvalParams", "KnnParams", "LauncherParams", "LinearParams",
    "MaeParams", "OptimParams", "ParamsError", "PretrainParams", "ScheduleParams", "SimMimParams", "TrainParams",
    "ViTParams", "apply_overrides", "load_params", "read_yaml", "validate",
]
