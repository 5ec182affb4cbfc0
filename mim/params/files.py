"""The params directory: `data.yaml`, `eval.yaml` and one `<method>.yaml` per method, each with its model.

DVC declares these files as stage params, so they are the whole configuration of a pipeline run;
`mim params check` validates them all before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mim.params.loading import ParamsError, load_params, read_yaml
from mim.params.models import (
    METHOD_NAMES,
    DataParams,
    DiversityParams,
    EvalParams,
    PretrainParams,
    RecipeParams,
    TeacherParams,
    TokenizerParams,
)

DEFAULT_PARAMS_DIR = "params"
SHARED_FILES: dict[str, type[BaseModel]] = {"data": DataParams, "eval": EvalParams, "tokenizer": TokenizerParams,
                                              "teacher": TeacherParams, "diversity": DiversityParams}


def model_for(name: str) -> type[BaseModel]:
    """The pydantic model of `params/<name>.yaml`."""
    if name in SHARED_FILES:
        return SHARED_FILES[name]
    if name in METHOD_NAMES:
        return RecipeParams
    known = ", ".join([*SHARED_FILES, *METHOD_NAMES])
    raise ParamsError(f"{name}.yaml: no params model for this file (known: {known})")


def load_file(path: str | Path, overrides: list[str] | None = None) -> BaseModel:
    """Validate one params file against the model its name selects (`mae.yaml` -> a mae recipe)."""
    path = Path(path)
    name = path.stem
    if name in METHOD_NAMES:
        return load_recipe_file(path, name, overrides)
    return load_params(model_for(name), path, overrides)


def load_recipe_file(path: Path, method: str, overrides: list[str] | None = None) -> RecipeParams:
    """A method's recipe; the file's `method.name` must agree with the method it is for."""
    named = (read_yaml(path).get("method") or {}).get("name")
    if named is not None and named != method:
        raise ParamsError(f"{path}: method.name: is {named!r} but this file is the {method!r} recipe")
    return load_params(RecipeParams, path, overrides, base={"method": {"name": method}})


def load_pretrain(params_dir: str | Path, method: str, overrides: list[str] | None = None) -> PretrainParams:
    """`<dir>/<method>.yaml` + `<dir>/data.yaml` as one run's params; `data.*` overrides go to data.yaml."""
    if method not in METHOD_NAMES:
        raise ParamsError(f"unknown method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    recipe, data = load_with_data(params_dir, method, overrides)
    return PretrainParams.compose(recipe, data)


def load_with_data(params_dir: str | Path, name: str, overrides: list[str] | None = None
                   ) -> tuple[BaseModel, DataParams]:
    """`<dir>/<name>.yaml` and `<dir>/data.yaml`, validated; `data.*` overrides go to data.yaml."""
    params_dir = Path(params_dir)
    data_sets, own_sets = split_overrides(overrides or [], "data")
    data = load_params(DataParams, params_dir / "data.yaml", data_sets)
    return load_file(params_dir / f"{name}.yaml", own_sets), data


def split_overrides(overrides: list[str], section: str) -> tuple[list[str], list[str]]:
    """(`section.*` overrides without the prefix, the others)."""
    prefix = section + "."
    inside = [o.removeprefix(prefix) for o in overrides if o.startswith(prefix)]
    return inside, [o for o in overrides if not o.startswith(prefix)]


def check_dir(params_dir: str | Path) -> dict[str, BaseModel]:
    """Validate every `*.yaml` under `params_dir`; one ParamsError lists every problem in every file."""
    params_dir = Path(params_dir)
    files = sorted(params_dir.glob("*.yaml"))
    if not files:
        raise ParamsError(f"{params_dir}: no params files (*.yaml) there")
    valid, errors = {}, []
    for f in files:
        try:
            valid[f.stem] = load_file(f)
        except ParamsError as err:
            errors.append(str(err).removeprefix("invalid parameters:\n  "))
    for name in ("data", "eval"):
        if name not in valid and not any(e.startswith(str(params_dir / name)) for e in errors):
            errors.append(f"{params_dir / (name + '.yaml')}: params file not found")
    if errors:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(errors))
    return valid


def resolved(model: BaseModel) -> dict[str, Any]:
    """Every value, defaults included, as plain YAML-able data."""
    return model.model_dump(mode="json")
