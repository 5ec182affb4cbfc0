"""`set_params`: a flow's parameters written into `params/<file>.yaml`, where DVC sees them.

The edit keeps the file's comments and layout (ruamel round-trip), is validated against the file's
pydantic model before anything is written, and replaces the file atomically.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from ruamel.yaml import YAML

from mim.params import ParamsError, load_file


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


@task(task_run_name="set params/{name}.yaml")
def set_params(project: str, name: str, updates: dict[str, Any]) -> list[str]:
    """Write `updates` ({dotted key: value}; None writes null) into `params/<name>.yaml`; returns changed keys."""
    path = Path(project) / "params" / f"{name}.yaml"
    if not updates:
        return []
    text, changed = edit_yaml_text(path.read_text(), updates)
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / path.name
        candidate.write_text(text)
        try:
            load_file(candidate)
        except ParamsError as err:
            raise ParamsError(str(err).replace(str(candidate), str(path))) from None
    if changed:
        tmp_path = path.with_suffix(f".yaml.tmp-{os.getpid()}")
        tmp_path.write_text(text)
        os.replace(tmp_path, path)
        get_run_logger().info("params/%s.yaml: set %s", name, ", ".join(f"{k}={updates[k]!r}" for k in changed))
    return changed
