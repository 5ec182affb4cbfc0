"""The layers import one way: every `import` in `mim/` (at the top or inside a function) points to a lower layer or
stays in its own package, and the library imports none of the orchestration tools."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

# Lowest first. A module may import its own package and lower layers; two packages on one layer know nothing of
# each other.
LAYERS: list[tuple[str, ...]] = [
    ("mim/io.py", "mim/rng.py", "mim/progress.py", "mim/__init__.py"),
    ("mim/masking", "mim/data"),
    ("mim/models",),
    ("mim/analysis", "mim/targets"),
    ("mim/methods",),
    ("mim/engine",),
    ("mim/evaluation",),
    ("mim/params",),  # schema, and `bind`: where params become library objects
    ("mim/project",),  # this repository: layout, dvc.yaml graph, results, local services
    ("mim/tracking",),  # the only importer of mlflow
    ("mim/bench",),
    ("mim/stages",),
    ("mim/cli",),
]
ORCHESTRATION = ("mim/stages", "mim/project", "mim/tracking", "mim/cli")
TOOLS = {"prefect", "dvc", "mlflow", "flows", "tasks"}
CORE = ("mim/engine", "mim/methods", "mim/targets", "mim/models", "mim/evaluation", "mim/data", "mim/masking",
        "mim/analysis", "mim/io.py", "mim/rng.py", "mim/progress.py")
FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "mim").rglob("*.py"))


def place(path: str) -> tuple[int, str]:
    """(layer index, package) of a repository path."""
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if path == prefix or path.startswith(prefix + "/"):
                return i, prefix
    raise AssertionError(f"{path} is on no layer: add it to LAYERS")


def module_path(name: str) -> str | None:
    base = ROOT / name.replace(".", "/")
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p.relative_to(ROOT).as_posix()
    return None


def imports(path: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`; `from a import b` gives `a.b` when b is a module."""
    out = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}")]
            out += [(node.lineno, m) for m in subs or [node.module]]
    return out


def test_every_file_has_a_layer():
    for f in FILES:
        place(f)


@pytest.mark.parametrize("path", FILES)
def test_imports_point_down(path):
    layer, package = place(path)
    for line, name in imports(path):
        target = module_path(name) if name.split(".")[0] == "mim" else None
        if target is None:
            continue
        t_layer, t_package = place(target)
        assert t_package == package or t_layer < layer, (
            f"{path}:{line} imports {name} ({t_package}, layer {t_layer}) from layer {layer} ({package})")


@pytest.mark.parametrize("path", [f for f in FILES if not f.startswith(ORCHESTRATION)])
def test_library_imports_no_orchestration_tool(path):
    used = {name.split(".")[0] for _, name in imports(path)}
    assert not used & TOOLS, f"{path} imports {sorted(used & TOOLS)}"


@pytest.mark.parametrize("path", [f for f in FILES if f.startswith(CORE)])
def test_core_library_takes_no_params(path):
    """engine, methods, targets (and every package below params) take plain configs: no `mim.params`."""
    bad = [name for _, name in imports(path) if name == "mim.params" or name.startswith("mim.params.")]
    assert not bad, f"{path} imports {bad}"


def test_the_checks_can_fail(tmp_path):
    """Controls: an upward import and a params import are seen, inside a function too."""
    probe = ROOT / "mim" / "engine" / "_probe_layers.py"
    probe.write_text("def f():\n    from mim.stages import report\n    import mlflow\n"
                     "    from mim.params import bind\n")
    try:
        path = probe.relative_to(ROOT).as_posix()
        with pytest.raises(AssertionError, match="imports mim.stages.report"):
            test_imports_point_down(path)
        with pytest.raises(AssertionError, match="mlflow"):
            test_library_imports_no_orchestration_tool(path)
        with pytest.raises(AssertionError, match="mim.params"):
            test_core_library_takes_no_params(path)
    finally:
        probe.unlink()


def test_no_module_is_named_private_but_imported_from_outside():
    """A `_name` module is its package's own business."""
    for f in FILES:
        for line, name in imports(f):
            parts = name.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if private and name.split(".")[0] == "mim":
                owner = "/".join(parts[: private[0]])
                assert f.startswith(owner + "/"), f"{f}:{line} imports private {name}"


def test_mim_never_imports_the_flows_or_tasks():
    """`mim serve` runs `python -m flows`; nothing under mim/ imports the orchestration packages above it."""
    for f in FILES:
        used = {name.split(".")[0] for _, name in imports(f)}
        assert not used & {"flows", "tasks"}, f"{f} imports {sorted(used & {'flows', 'tasks'})}"
