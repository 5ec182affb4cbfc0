"""Edits of params files that keep their comments and layout, validated before anything is written."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from mim.io import write_text
from mim.params.files import check_dir, load_file
from mim.params.loading import ParamsError

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
    text, changed = edit_yaml_text(path.read_text(), updates)
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / path.name
        candidate.write_text(text)
        try:
            load_file(candidate)
        except ParamsError as err:
            raise ParamsError(str(err).replace(str(candidate), str(path))) from None
    if changed:
        write_text(str(path), text)
    return changed


def list_sets(params_dir: str | Path) -> list[str]:
    root = Path(params_dir) / SETS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def use_set(params_dir: str | Path, name: str, source: str | None = None) -> list[str]:
    """Make `params/sets/<name>/` the active params: every file of the set is validated, then copied over
    `params/<file>.yaml`; `source` also sets `data.source`. Returns the files written."""
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
        written = []
        for f in sorted(staged.glob("*.yaml")):
            write_text(str(params_dir / f.name), f.read_text())
            written.append(f.name)
    return written
