"""The pipeline graph as `dvc.yaml` declares it: which methods run, and which stage builds each one's input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def dvc_spec(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.yaml").read_text())


def pipeline_methods(root: Path) -> dict[str, dict[str, Any]]:
    """The methods `dvc.yaml` runs (its `vars: methods` mapping: method -> {input: ...})."""
    for entry in dvc_spec(root).get("vars", []):
        if isinstance(entry, dict) and "methods" in entry:
            return dict(entry["methods"])
    raise ValueError(f"{root / 'dvc.yaml'}: no `vars: - methods: {{...}}` mapping")


def input_stage(root: Path, method: str) -> str | None:
    """The stage that writes `method`'s extra input (e.g. `tokenizer` for ccvit), None when it needs none."""
    wanted = pipeline_methods(root)[method].get("input")
    for name, stage in dvc_spec(root)["stages"].items():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        if "foreach" not in stage and wanted in outs and name != "prepare":
            return name
    return None
