"""The params directory: `data.yaml`, `eval.yaml` and one `<method>.yaml` per method, each with its model.

DVC declares these files as stage params, so they are the whole configuration of a pipeline run;
`mim params check` validates them all before any work starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mim.params.checks import cross_checks, pipeline_input_problems, shared_inputs
from mim.params.evaluation import EvalParams, TransferParams
from mim.params.loading import (
    ParamsError,
    apply_overrides,
    deep_merge,
    load_params,
    params_error,
    problems_of,
    read_yaml,
    section,
    validate,
)
from mim.params.methods import METHOD_NAMES
from mim.params.models import DataParams, PretrainParams, RecipeParams
from mim.params.pipeline import PipelineParams
from mim.params.targets import DiversityParams, TeacherParams, TokenizerParams

log = logging.getLogger("mim")
DEFAULT_PARAMS_DIR = "params"
SHARED_FILES: dict[str, type[BaseModel]] = {"data": DataParams, "eval": EvalParams, "tokenizer": TokenizerParams,
                                              "teacher": TeacherParams, "diversity": DiversityParams,
                                              "transfer": TransferParams, "pipeline": PipelineParams}


def model_for(name: str) -> type[BaseModel]:
    """The pydantic model of `params/<name>.yaml`: a shared file's own model, else a recipe (RecipeParams)."""
    return SHARED_FILES.get(name, RecipeParams)


def load_file(path: str | Path, overrides: list[str] | None = None) -> BaseModel:
    """Validate one params file against the model its name selects (`mae.yaml` -> a mae recipe)."""
    path = Path(path)
    name = path.stem
    if name in SHARED_FILES:
        return load_params(SHARED_FILES[name], path, overrides)
    return load_recipe_file(path, name, overrides)


def load_recipe_file(path: Path, recipe: str, overrides: list[str] | None = None) -> RecipeParams:
    """A pre-training recipe. `<method>.yaml` is that method's recipe (its `method.name` may be left out but must
    agree); any other name (`cim-resnet.yaml`, `maskfeat.yaml`) is a variant that names its method."""
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (recipes: a method name {', '.join(METHOD_NAMES)}, or a "
                          "variant file with method.name)")
    named = section(read_yaml(path), "method", path).get("name")
    if recipe in METHOD_NAMES:
        if named is not None and named != recipe:
            raise ParamsError(f"{path}: method.name: is {named!r} but this file is the {recipe!r} recipe")
        return load_params(RecipeParams, path, overrides, base={"method": {"name": recipe}})
    if named is None or named not in METHOD_NAMES:
        got = "missing" if named is None else f"{named!r} is not a method"
        raise ParamsError(f"{path}: method.name: {got}; a recipe file is named after its method or names one of "
                          f"{', '.join(METHOD_NAMES)}")
    return load_params(RecipeParams, path, overrides)


def load_pretrain(params_dir: str | Path, recipe: str, overrides: list[str] | None = None) -> PretrainParams:
    """`<dir>/<recipe>.yaml` + `<dir>/data.yaml` as one run's params; `data.*` overrides go to data.yaml."""
    if recipe in SHARED_FILES:
        raise ParamsError(f"{recipe}.yaml is a shared params file, not a pre-training recipe")
    recipe_params, data = load_with_data(params_dir, recipe, overrides)
    params_dir = Path(params_dir)
    shared = {}
    for name in shared_inputs(recipe_params):  # only the files this recipe trains from
        if (params_dir / f"{name}.yaml").is_file():
            shared[name] = (load_file(params_dir / f"{name}.yaml"), str(params_dir / f"{name}.yaml"))
    problems = cross_checks(recipe_params, str(params_dir / f"{recipe}.yaml"), data, str(params_dir / "data.yaml"),
                            shared)
    if problems:
        raise params_error(problems)
    return compose(recipe_params, data, f"{params_dir / f'{recipe}.yaml'} + {params_dir / 'data.yaml'}")


def compose(recipe: RecipeParams, data: DataParams, origin: str) -> PretrainParams:
    """One run's params from a recipe and its data (the checks spanning both included), errors naming `origin`."""
    return validate(PretrainParams, {**recipe.model_dump(), "data": data.model_dump()}, origin)


def load_one_off(params_dir: str | Path, method: str | None, params_file: str | Path | None,
                 overrides: list[str] | None = None) -> PretrainParams:
    """The params of a one-off run (`mim pretrain --out DIR`), by the stage form's rule: the data is
    `<dir>/data.yaml` (when it exists), under the `data:` section of `params_file` (its keys win), under
    `--set data.*`; the recipe is `params_file` when given, else `<dir>/<method>.yaml` (when it exists), else the
    built-in defaults of `method`, under the other `--set`s."""
    params_dir = Path(params_dir)
    data_sets, own_sets = split_overrides(overrides or [], "data")
    data_yaml = params_dir / "data.yaml"
    data_dict = read_yaml(data_yaml) if data_yaml.is_file() else {}
    origins = [str(data_yaml)] if data_yaml.is_file() else []
    named = {"method": {"name": method}} if method in METHOD_NAMES else {}  # a variant's file names its method
    if params_file is not None:
        own = read_yaml(params_file)
        file_method = section(own, "method", params_file).get("name")
        if method in METHOD_NAMES and file_method and file_method != method:
            raise ParamsError(f"{params_file}: method.name is {file_method!r} but --method is {method!r}")
        file_data = section(own, "data", params_file)
        if file_data:
            data_dict, origins = deep_merge(data_dict, file_data), [*origins, f"{params_file} (data:)"]
        recipe_dict = {k: v for k, v in own.items() if k != "data"}
        recipe = validate(RecipeParams, apply_overrides(deep_merge(named, recipe_dict), own_sets),
                          _origin(str(params_file), own_sets))
    elif method and ((params_dir / f"{method}.yaml").is_file() or method not in METHOD_NAMES):
        recipe = load_recipe_file(params_dir / f"{method}.yaml", method, own_sets)
    else:
        if method:
            log.info("%s not found: the recipe is the built-in %s defaults (and --set)",
                     params_dir / f"{method}.yaml", method)
        recipe = validate(RecipeParams, apply_overrides(named, own_sets), _origin("params", own_sets))
    data = load_data(params_dir, data_sets, data_dict, origins)
    recipe_origin = str(params_file) if params_file is not None else (
        str(params_dir / f"{method}.yaml") if method and (params_dir / f"{method}.yaml").is_file() else "params")
    problems = cross_checks(recipe, recipe_origin, data, " + ".join(origins) or "data params")
    if problems:
        raise params_error(problems)
    return compose(recipe, data, "params")


def load_data(params_dir: str | Path, overrides: list[str] | None = None, base: dict[str, Any] | None = None,
              origins: list[str] | None = None) -> DataParams:
    """The data params of a one-off command: `<dir>/data.yaml` when it exists (else the built-in defaults, said
    in one log line), or `base` already read from it, under `overrides` (`data.` prefix removed)."""
    data_yaml = Path(params_dir) / "data.yaml"
    if base is None:
        base = read_yaml(data_yaml) if data_yaml.is_file() else {}
        origins = [str(data_yaml)] if data_yaml.is_file() else []
    if not data_yaml.is_file():
        log.info("%s not found: the data params are the built-in defaults (and --set data.*)", data_yaml)
    overrides = overrides or []
    return validate(DataParams, apply_overrides(base, overrides),
                    _origin(" + ".join(origins or []) or "data params", [f"data.{s}" for s in overrides]))


def _origin(where: str, overrides: list[str]) -> str:
    return where + (" (with --set " + ", ".join(overrides) + ")" if overrides else "")


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
            errors += problems_of(err)
    errors += cross_file_problems(params_dir, valid)
    if isinstance(pipeline := valid.get("pipeline"), PipelineParams):
        errors += [f"{params_dir / 'pipeline.yaml'}: methods: {name}: no {params_dir / (name + '.yaml')}"
                   for name in pipeline.methods if not (params_dir / f"{name}.yaml").is_file()]
        recipes = {name: (recipe, str(params_dir / f"{name}.yaml")) for name, recipe in valid.items()
                   if isinstance(recipe, RecipeParams)}
        errors += pipeline_input_problems(pipeline, str(params_dir / "pipeline.yaml"), recipes)
    for name in ("data", "eval"):
        if name not in valid and not any(e.startswith(str(params_dir / name)) for e in errors):
            errors.append(f"{params_dir / (name + '.yaml')}: params file not found")
    if errors:
        raise params_error(errors)
    return valid


def cross_file_problems(params_dir: Path, valid: dict[str, BaseModel]) -> list[str]:
    """The cross-file constraints (`mim.params.checks`) of every valid recipe with the valid shared files."""
    data = valid.get("data")
    if not isinstance(data, DataParams):
        return []
    shared = {name: (valid[name], str(params_dir / f"{name}.yaml")) for name in ("tokenizer", "teacher")
              if name in valid}
    return [problem for name, recipe in valid.items() if isinstance(recipe, RecipeParams)
            for problem in cross_checks(recipe, str(params_dir / f"{name}.yaml"), data, str(params_dir / "data.yaml"),
                                        shared)]


def resolved(model: BaseModel) -> dict[str, Any]:
    """Every value, defaults included, as plain YAML-able data."""
    return model.model_dump(mode="json")
