"""dvc.yaml agrees with the code: declared params exist in the models, stages depend on the code they import."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mim.params import METHOD_NAMES, check_dir, model_for
from tests.helpers import ROOT

SPEC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
METHODS = next(v["methods"] for v in SPEC["vars"] if "methods" in v)
BASELINES = next(v["baselines"] for v in SPEC["vars"] if "baselines" in v)
# Code that records or launches but cannot change a stage's outputs.
NOT_OUTPUT_CODE = ("mim/tracking/", "mim/services.py", "mim/cli.py")
STAGE_MODULES = {"prepare": "mim.stages.prepare", "tokenizer": "mim.stages.tokenizer", "teacher": "mim.stages.teacher",
                 "diversity": "mim.stages.diversity",
                 "transfer": "mim.stages.transfer", "report": "mim.stages.report",
                 "pretrain": "mim.stages.pretrain", "evaluate": "mim.stages.evaluate"}


def expanded_stages() -> dict[str, dict]:
    """Every concrete stage, `foreach` items substituted (`pretrain@mae`, ...)."""
    out = {}
    for name, stage in SPEC["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        if stage["foreach"] == "${baselines}":  # a list: ${item} is the recipe
            for recipe in BASELINES:
                out[f"{name}@{recipe}"] = json.loads(json.dumps(stage["do"]).replace("${item}", recipe))
            continue
        assert stage["foreach"] == "${methods}", f"{name}: foreach over something other than methods or baselines"
        for key, item in METHODS.items():
            text = json.dumps(stage["do"]).replace("${key}", key)
            for field, value in item.items():
                text = text.replace("${item." + field + "}", value)
            out[f"{name}@{key}"] = json.loads(text)
    return out


STAGES = expanded_stages()


def field_exists(model: type[BaseModel], dotted: str) -> bool:
    node: type[BaseModel] | None = model
    for part in dotted.split("."):
        if node is None or part not in node.model_fields:
            return False
        ann = node.model_fields[part].annotation
        node = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return True


def test_pipeline_runs_every_method_with_a_params_file():
    assert set(METHOD_NAMES) <= set(METHODS) and set(BASELINES) <= set(METHODS)
    shared = {"data", "eval", "tokenizer", "teacher", "diversity", "transfer"}
    assert set(check_dir(ROOT / "params")) == shared | set(METHODS)


def test_each_method_input_is_written_by_a_stage():
    written = {o if isinstance(o, str) else next(iter(o)) for st in STAGES.values() for o in st.get("outs", [])}
    for method, item in METHODS.items():
        assert item["input"] in written, f"{method}: input {item['input']} is no stage's output"
    assert METHODS["ccvit"]["input"] == "models/tokenizer" and METHODS["img2vec"]["input"] == "models/teacher"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_declared_params_exist_in_the_models(stage):
    for entry in STAGES[stage].get("params", []):
        for file, keys in entry.items():
            path = ROOT / file
            assert path.is_file(), f"{stage}: params file {file} does not exist"
            model = model_for(path.stem)
            for key in keys or []:
                assert field_exists(model, key), f"{stage}: {file}: {key} is not a field of {model.__name__}"


@functools.cache
def imported_code(module: str) -> list[str]:
    """The project files a fresh interpreter loads to import `module`."""
    probe = (f"import sys, {module}; "
             "print('\\n'.join(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)))")
    files = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    return sorted({p.relative_to(ROOT).as_posix() for p in map(Path, files) if p.is_relative_to(ROOT / "mim")})


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_depend_on_the_code_they_import(stage):
    spec = STAGES[stage]
    code = imported_code(STAGE_MODULES[spec["cmd"].split()[1]])
    deps = [d.rstrip("/") for d in spec["deps"]]
    missing = [f for f in code if not f.startswith(NOT_OUTPUT_CODE)
               and not any(f == d or f.startswith(d + "/") for d in deps)]
    assert not missing, f"{stage} imports code that is not among its deps: {missing}"
    outputs = {o if isinstance(o, str) else next(iter(o)) for st in STAGES.values()
               for section in ("outs", "metrics", "plots") for o in st.get(section, [])}
    for dep in deps:
        produced = any(dep == o or dep.startswith(o + "/") or o.startswith(dep + "/") for o in outputs)
        assert produced or (ROOT / dep).exists(), f"{stage}: dep {dep} is neither in the repository nor an output"


def test_every_output_is_declared_once():
    seen: dict[str, str] = {}
    for name, spec in STAGES.items():
        for section in ("outs", "metrics", "plots"):
            for entry in spec.get(section, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert path not in seen, f"{path} is an output of both {seen[path]} and {name}"
                seen[path] = name


def test_comparison_plot_covers_every_method():
    plotted = {y for plot in SPEC["plots"] for p in plot.values() for y in p.get("y", {})}
    assert plotted >= {f"plots/pretrain/{m}/history.csv" for m in METHODS}


def test_diversity_stage_depends_on_every_encoder_it_analyses():
    models = yaml.safe_load((ROOT / "params" / "diversity.yaml").read_text())["models"]
    encoders = {m["weights"] for m in models.values() if m.get("kind") == "encoder"}
    assert encoders, "the default diversity comparison includes encoders of ours"
    assert encoders <= set(STAGES["diversity"]["deps"]), "list each encoder of params/diversity.yaml as a dep"
