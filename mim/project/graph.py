"""The pipeline graph as `dvc.yaml` and `params/pipeline.yaml` declare it: which recipes and seeds run, and which
stage builds each recipe's input."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from mim.params import PipelineParams, load_file, load_params
from mim.params.checks import pipeline_input_problems
from mim.project.layout import PIPELINE_PARAMS, stage_name


def dvc_spec(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.yaml").read_text())


def pipeline(root: Path) -> PipelineParams:
    """`params/pipeline.yaml` under `root` (the file dvc.yaml reads as `vars`), validated."""
    path = root / PIPELINE_PARAMS
    if not path.is_file():
        raise ValueError(f"{path}: not found (dvc.yaml reads the recipes and seeds from it)")
    return load_params(PipelineParams, path)


def pipeline_methods(root: Path) -> dict[str, dict[str, Any]]:
    """The recipes the pipeline runs: recipe -> {input: ...}, in the file's order."""
    return {m: item.model_dump() for m, item in pipeline(root).methods.items()}


def declared_stages(root: Path) -> list[str]:
    """Every stage name dvc.yaml declares with params/pipeline.yaml's values, in file order (`prepare`,
    `pretrain@mae-0`, ...): matrix stages expanded over `${var}` lists (a mapping gives its keys) or literal lists."""
    values = pipeline(root).model_dump()
    names = []
    for name, stage in dvc_spec(root)["stages"].items():
        if not isinstance(stage, dict) or "matrix" not in stage:
            names.append(name)
            continue
        axes = []
        for axis in stage["matrix"].values():
            if isinstance(axis, str) and axis.startswith("${") and axis.endswith("}"):
                axis = values[axis[2:-1]]
            axes.append([str(v) for v in axis])
        names += [f"{name}@{'-'.join(combo)}" for combo in itertools.product(*axes)]
    return names


def recipe_stages(root: Path, recipe: str, stages: tuple[str, ...] = ("pretrain", "evaluate")) -> list[str]:
    """`pretrain@<recipe>-<seed>`, `evaluate@<recipe>-<seed>`, ... for every seed, seed by seed."""
    return [stage_name(stage, recipe, s) for s in pipeline(root).seeds for stage in stages]


def input_stage(root: Path, method: str) -> str | None:
    """The stage that writes `method`'s extra input (e.g. `tokenizer` for ccvit), None when it needs none.
    ValueError, one line, when params/pipeline.yaml declares another input than the recipe's file trains from, or
    when no plain stage of dvc.yaml writes it."""
    pipe = pipeline(root)
    recipe_file = root / PIPELINE_PARAMS.parent / f"{method}.yaml"
    if recipe_file.is_file():
        recipes = {method: (load_file(recipe_file), str(recipe_file))}
        if problems := pipeline_input_problems(pipe, str(root / PIPELINE_PARAMS), recipes):
            raise ValueError(problems[0])
    wanted = Path(pipe.methods[method].input)
    for name, stage in dvc_spec(root)["stages"].items():
        outs = [Path(o if isinstance(o, str) else next(iter(o))) for o in stage.get("outs", [])]
        if not {"foreach", "matrix"} & set(stage) and wanted in outs:
            return None if name == "prepare" else name
    raise ValueError(f"{root / PIPELINE_PARAMS}: methods: {method}: input {wanted.as_posix()}: no stage of dvc.yaml "
                     "writes it (a plain stage with it among its outs)")


def undeclared_dep(root: Path, stage: str, path: str) -> bool:
    """True when `root` is a pipeline project (it has a dvc.yaml) whose stage `stage` does not list the
    project file `path`, nor a folder above it, among its deps: then DVC would neither order that stage after the
    one writing `path` nor re-run it when `path` changes; `stage` may be a matrix stage's name (`pretrain`). False
    outside a project, for a path outside it, for a stage dvc.yaml does not declare, or one whose deps are
    interpolated (`${...}`): a reorganized graph is not second-guessed."""
    if not (root / "dvc.yaml").is_file() or "://" in path or Path(path).is_absolute():
        return False
    if not (root / path).resolve().is_relative_to(root.resolve()):
        return False
    spec = dvc_spec(root)["stages"].get(stage)
    if not isinstance(spec, dict) or "deps" not in spec or any("${" in str(dep) for dep in spec["deps"]):
        return False
    target = Path(path).as_posix().strip("/").split("/")
    for dep in spec["deps"]:
        parts = Path(str(dep)).as_posix().strip("/").split("/")
        if target[:len(parts)] == parts:
            return False
    return True


def require_dep(root: Path, stage: str, path: str, what: str) -> None:
    """ValueError, one line, when `stage` reads the project file `path` (`what`, e.g. "teacher weights") that
    dvc.yaml does not list among its deps (`undeclared_dep`)."""
    if undeclared_dep(root, stage, path):
        raise ValueError(f"{what} {path}: add it to the {stage} stage's deps in dvc.yaml, so DVC runs the stage that "
                         f"writes it first and re-runs {stage} when it changes (docs/pipeline.md)")
