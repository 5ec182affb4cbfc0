"""dvc.yaml agrees with the code: declared params exist in the models, stages depend on the code they import."""

from __future__ import annotations

import ast
import functools
import itertools
import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mim.params import METHOD_NAMES, check_dir, model_for
from tests.helpers import ROOT

SPEC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PIPELINE = yaml.safe_load((ROOT / "params" / "pipeline.yaml").read_text())
METHODS, BASELINES, SEEDS = PIPELINE["methods"], PIPELINE["baselines"], PIPELINE["seeds"]
# Code that records, locates or launches but cannot change a stage's outputs.
NOT_OUTPUT_CODE = ("mim/tracking/", "mim/project/services.py", "mim/project/state.py", "mim/cli/")
STAGE_MODULES = {"prepare": "mim.stages.prepare", "tokenizer": "mim.stages.tokenizer", "teacher": "mim.stages.teacher",
                 "diversity": "mim.stages.diversity",
                 "transfer": "mim.stages.transfer", "report": "mim.stages.report",
                 "pretrain": "mim.stages.pretrain", "evaluate": "mim.stages.evaluate"}


# a mapping iterates its keys; the fine-tuning stages are checked at every seed, though the demo runs none
VARS = {"${methods}": list(METHODS), "${baselines}": BASELINES, "${seeds}": SEEDS, "${transfer_seeds}": SEEDS}


def expanded_stages() -> dict[str, dict]:
    """Every concrete stage, `matrix` items substituted as DVC names them (`pretrain@mae-0`, `scratch@0`)."""
    assert SPEC["vars"] == ["params/pipeline.yaml"], "dvc.yaml reads the recipes and seeds from params/pipeline.yaml"
    out = {}
    for name, stage in SPEC["stages"].items():
        assert "foreach" not in stage, f"{name}: per-recipe stages are matrix stages (recipe x seed)"
        if "matrix" not in stage:
            out[name] = stage
            continue
        body = {k: v for k, v in stage.items() if k != "matrix"}
        axes = {key: VARS[ref] for key, ref in stage["matrix"].items()}
        for combo in itertools.product(*axes.values()):
            text = json.dumps(body)
            for key, value in zip(axes, combo, strict=True):
                text = text.replace("${item." + key + "}", str(value))
            assert "${" not in text, f"{name}: unresolved {text[text.index('${'):][:30]}"
            out[f"{name}@{'-'.join(map(str, combo))}"] = json.loads(text)
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
    """The demo runs the seed methods (MAE the reference); every recipe's file stays valid for the other sets."""
    assert {"mae", "ccvit", "cim", "mixmim", "dmjd", "img2vec"} <= set(METHODS) and set(BASELINES) <= set(METHODS)
    shared = {"data", "eval", "tokenizer", "teacher", "diversity", "transfer", "pipeline"}
    assert set(check_dir(ROOT / "params")) == shared | set(METHOD_NAMES) | {"cim-resnet", "cim-resnet-revdet",
                                                                           "maskfeat", "fastmim"}
    assert set(METHODS) <= set(check_dir(ROOT / "params"))


@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "params" / "sets").iterdir()))
def test_every_params_set_names_its_pipeline_and_its_recipes(folder):
    valid = check_dir(ROOT / "params" / "sets" / folder)  # a recipe without its file is an error there
    assert "pipeline" in valid, f"params/sets/{folder} has no pipeline.yaml: `mim params use` would keep another's"


def test_each_method_input_is_written_by_a_stage_the_pretrain_stages_depend_on():
    written = {o if isinstance(o, str) else next(iter(o)) for st in STAGES.values() for o in st.get("outs", [])}
    for folder in ["params", *[f"params/sets/{p.name}" for p in (ROOT / "params" / "sets").iterdir()]]:
        for method, item in yaml.safe_load((ROOT / folder / "pipeline.yaml").read_text())["methods"].items():
            assert item["input"] in written, f"{folder}: {method}: input {item['input']} is no stage's output"
            assert item["input"] in SPEC["stages"]["pretrain"]["deps"], f"{folder}: {method}: pretrain lacks its input"
    assert METHODS["ccvit"]["input"] == "models/tokenizer" and METHODS["img2vec"]["input"] == "models/teacher"


def test_matrix_stages_are_named_by_recipe_and_seed():
    assert {"pretrain@mae-0", "evaluate@dmjd-0", "transfer@cim-0", "baseline@mixmim-0", "scratch@0"} <= set(STAGES)
    assert STAGES["pretrain@mae-0"]["cmd"] == "mim pretrain --method mae --seed 0"
    assert STAGES["baseline@mixmim-0"]["cmd"] == "mim evaluate --baseline-of mixmim --seed 0"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_declared_params_exist_in_the_models(stage):
    for entry in STAGES[stage].get("params", []):
        for file, keys in entry.items():
            path = ROOT / file
            assert path.is_file(), f"{stage}: params file {file} does not exist"
            model = model_for(path.stem)
            for key in keys or []:
                assert field_exists(model, key), f"{stage}: {file}: {key} is not a field of {model.__name__}"


def module_file(name: str) -> Path | None:
    """The file of module `name` in this repository (a package's `__init__.py`), None outside it."""
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (imports for annotations only never run)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imported_names(path: Path) -> set[str]:
    """Every absolute module name `path` imports when it runs, at the top or inside functions (`from a import b`
    also names `a.b`, in case b is a module)."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@functools.cache
def imported_code(module: str) -> list[str]:
    """The `mim/` files that importing `module` and calling its functions can load: the static closure of its
    imports, those inside functions included, with every parent package's `__init__.py`."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen and path.is_relative_to(ROOT / "mim"):
                seen.add(path)
                todo.extend(_imported_names(path))
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


def test_the_import_closure_sees_imports_inside_functions():
    """The probe behind the deps test: `mim.cli.stages` imports the stage modules only inside its functions."""
    code = imported_code("mim.cli.stages")
    assert "mim/stages/report.py" in code and "mim/stages/prepare.py" in code
    assert "mim/stages/report.py" not in imported_code("mim.stages.prepare")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_depend_on_the_code_they_import(stage):
    spec = STAGES[stage]
    code = imported_code(STAGE_MODULES[spec["cmd"].split()[1]])
    deps = [d.rstrip("/") for d in spec["deps"]]
    missing = [f for f in code if not f.startswith(NOT_OUTPUT_CODE)
               and not any(f == d or f.startswith(d + "/") for d in deps)]
    assert not missing, f"{stage} imports code that is not among its deps: {missing}"
    unused = [d for d in deps if d.startswith("mim/") and not any(f == d or f.startswith(d + "/") for f in code)]
    assert not unused, f"{stage} depends on code it never imports (edits there would re-run it): {unused}"
    outputs = {o if isinstance(o, str) else next(iter(o)) for st in STAGES.values()
               for section in ("outs", "metrics", "plots") for o in st.get(section, [])}
    for dep in deps:
        produced = any(dep == o or dep.startswith(o + "/") or o.startswith(dep + "/") for o in outputs)
        assert produced or (ROOT / dep).exists(), f"{stage}: dep {dep} is neither in the repository nor an output"


def test_prepare_does_not_depend_on_models_or_training_code():
    """An edit of a ViT block, a method or the engine must not re-run `prepare` (nor the tokenizer)."""
    for stage in ("prepare", "tokenizer"):
        code = imported_code(STAGE_MODULES[stage])
        assert not [f for f in code if f.startswith(("mim/models/", "mim/methods/", "mim/engine/trainer"))], stage


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
    assert plotted >= {f"plots/pretrain/{m}/seed-{SEEDS[0]}/history.csv" for m in METHODS}


def test_diversity_stage_depends_on_every_encoder_it_analyses():
    models = yaml.safe_load((ROOT / "params" / "diversity.yaml").read_text())["models"]
    encoders = {m["weights"] for m in models.values() if m.get("kind") == "encoder"}
    assert encoders, "the default diversity comparison includes encoders of ours"
    assert encoders <= set(STAGES["diversity"]["deps"]), "list each encoder of params/diversity.yaml as a dep"


def _has_cycle(stages: dict[str, dict]) -> bool:
    """Whether the stages' out -> dep edges (a dep at, above or below an out) form a cycle."""
    def paths(entries):
        return [(e if isinstance(e, str) else next(iter(e))).rstrip("/") for e in entries]

    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    outs = {n: paths(s.get("outs", [])) for n, s in stages.items()}
    after = {n: {m for m in stages if m != n and any(overlaps(d, o) for d in paths(stages[n].get("deps", []))
                                                     for o in outs[m])} for n in stages}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(n: str) -> bool:
        state[n] = 1
        for m in after[n]:
            if state.get(m) == 1 or (m not in state and visit(m)):
                return True
        state[n] = 2
        return False

    return any(n not in state and visit(n) for n in stages)


def test_an_encoder_teacher_from_outside_models_keeps_the_graph_acyclic():
    """Every pre-training depends on models/teacher (a matrix cannot pick one recipe's input), so a teacher made
    from an encoder this pipeline trains is a cycle; a copy outside models/ (docs/teachers.md) is not."""
    assert not _has_cycle(STAGES)
    teacher = STAGES["teacher"]
    copied = {**STAGES, "teacher": {**teacher, "deps": [*teacher["deps"], "teachers/mae.safetensors"]}}
    assert not _has_cycle(copied)
    assert "models/teacher" in json.dumps(STAGES["pretrain@mae-0"]["deps"])
    trained = {**STAGES, "teacher": {**teacher, "deps": [*teacher["deps"], "models/mae/seed-0/encoder.safetensors"]}}
    assert _has_cycle(trained)  # control: the detector sees the cycle docs/teachers.md warns about
