"""`set_params`: a flow's parameters written into `params/<file>.yaml` files, where DVC sees them.

The edit keeps the files' comments and layout (ruamel round-trip) and is all or nothing: every edited file is
validated against its pydantic model, and the recipes against the data and shared files, before any file is
written; each is then replaced atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from mim.params.edit import edit_files


@task(task_run_name="set params")
def set_params(project: str, updates: dict[str, dict[str, Any]]) -> list[str]:
    """Write `updates` ({file stem: {dotted key: value}}; None writes null) into `params/<stem>.yaml`, all files
    or none; returns the changed keys as `stem.key`."""
    updates = {name: u for name, u in updates.items() if u}
    if not updates:
        return []
    changed = edit_files(Path(project) / "params", updates)
    for name, key in changed:
        get_run_logger().info("params/%s.yaml: set %s=%r", name, key, updates[name][key])
    return [f"{name}.{key}" for name, key in changed]
