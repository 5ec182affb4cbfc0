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


def undeclared_dep(root: Path, stage: str, path: str) -> bool:
    """True when `root` is a pipeline project (it has a dvc.yaml) whose plain stage `stage` does not list the
    project file `path`, nor a folder above it, among its deps: then DVC would neither order that stage after the
    one writing `path` nor re-run it when `path` changes. False outside a project, for a path outside it, or for
    a stage dvc.yaml does not declare as a plain stage (a reorganized graph is not second-guessed)."""
    if not (root / "dvc.yaml").is_file() or "://" in path or Path(path).is_absolute():
        return False
    if not (root / path).resolve().is_relative_to(root.resolve()):
        return False
    spec = dvc_spec(root)["stages"].get(stage)
    if not isinstance(spec, dict) or "deps" not in spec:
        return False
    target = Path(path).as_posix().strip("/").split("/")
    for dep in spec["deps"]:
        parts = Path(str(dep)).as_posix().strip("/").split("/")
        if target[:len(parts)] == parts:
            return False
    return True
