"""Edits of params files that keep their comments and layout, validated before anything is written."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ruamel.yaml import YAML

from mim.io import write_text
from mim.params.files import check_dir, cross_file_problems, load_file
from mim.params.loading import ParamsError, params_error, problems_of

SETS = "sets"  # params/sets/<name>/: complete params sets that `use_set` makes active


def edit_yaml_text(text: str, updates: dict[str, Any]) -> tuple[str, list[str]]:
    """`text` with each dotted key set (sections created as needed); returns (new text, keys that changed)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(text) or {}
    changed = []
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if leaf not in node or node[leaf] != value:
            node[leaf] = value
            changed.append(dotted)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue(), changed


def edit_file(path: str | Path, updates: dict[str, Any]) -> list[str]:
    """Set dotted keys in the params file at `path` (validated first, then replaced atomically); returns the keys
    that changed."""
    path = Path(path)
    return [key for _, key in edit_files(path.parent, {path.stem: updates})]


def edit_files(params_dir: str | Path, updates: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Set dotted keys in several params files at once ({file stem: {dotted key: value}}), all or nothing: every
    edited file is validated, and the recipes checked against the data and shared files (`mim.params.checks`),
    in a staged copy first; only then is each file replaced (atomically). Returns (stem, key) of what changed."""
    params_dir = Path(params_dir)
    texts, changed = {}, []
    for stem, file_updates in updates.items():
        path = params_dir / f"{stem}.yaml"
        if not path.is_file():
            raise ParamsError(f"{path}: params file not found")
        texts[stem], keys = edit_yaml_text(path.read_text(), file_updates)
        changed += [(stem, k) for k in keys]
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for f in params_dir.glob("*.yaml"):
            shutil.copy2(f, staged / f.name)
        for stem, text in texts.items():
            (staged / f"{stem}.yaml").write_text(text)
        problems = []
        for stem in texts:
            try:
                load_file(staged / f"{stem}.yaml")
            except ParamsError as err:
                problems += problems_of(err)
        if not problems:
            edited = [str(staged / f"{stem}.yaml") for stem in texts]
            problems = [p for p in cross_file_problems(staged, _valid_files(staged)) if any(e in p for e in edited)]
        if problems:
            raise params_error([p.replace(str(staged), str(params_dir)) for p in problems],
                               "invalid parameters (no file changed)")
    for stem, text in texts.items():
        if any(s == stem for s, _ in changed):
            write_text(str(params_dir / f"{stem}.yaml"), text)
    return changed


def _valid_files(params_dir: Path) -> dict[str, BaseModel]:
    """The params files under `params_dir` valid on their own (the others take no part in cross-file checks)."""
    valid = {}
    for f in sorted(params_dir.glob("*.yaml")):
        try:
            valid[f.stem] = load_file(f)
        except ParamsError:
            continue
    return valid


def list_sets(params_dir: str | Path) -> list[str]:
    root = Path(params_dir) / SETS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def use_set(params_dir: str | Path, name: str, source: str | None = None,
            backup_dir: str | Path | None = None) -> list[str]:
    """Make `params/sets/<name>/` the active params: every file of the set is validated, then copied over
    `params/<file>.yaml`; `source` also sets `data.source`. The files it replaces with other contents are first
    copied to `backup_dir` (nothing is lost: an edit not yet committed survives). Returns the files written."""
    params_dir = Path(params_dir)
    folder = params_dir / SETS / name
    if not folder.is_dir():
        raise ParamsError(f"{folder}: no params set {name!r} (sets: {', '.join(list_sets(params_dir)) or 'none'})")
    check_dir(folder)
    with tempfile.TemporaryDirectory() as tmp:  # the set with its source, validated before params/ changes
        staged = Path(tmp)
        for f in sorted(folder.glob("*.yaml")):
            shutil.copy2(f, staged / f.name)
        if source is not None:
            edit_file(staged / "data.yaml", {"source": source})
        replaced = [f.name for f in sorted(staged.glob("*.yaml"))
                    if (params_dir / f.name).is_file() and (params_dir / f.name).read_text() != f.read_text()]
        if backup_dir is not None:
            for file_name in replaced:
                write_text(str(Path(backup_dir) / file_name), (params_dir / file_name).read_text())
        written = []
        for f in sorted(staged.glob("*.yaml")):
            write_text(str(params_dir / f.name), f.read_text())
            written.append(f.name)
    return written
