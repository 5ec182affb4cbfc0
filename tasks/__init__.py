"""Prefect tasks: one per DVC stage (`dvc repro <stage>`), and the params-file edits flows make."""

from tasks.dvc_stage import StageFailed, project_lock, repro
from tasks.params_edit import set_params

__all__ = ["StageFailed", "project_lock", "repro", "set_params"]
