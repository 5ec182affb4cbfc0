"""`set_params`: a flow's parameters written into `params/<file>.yaml`, where DVC sees them.

The edit keeps the file's comments and layout (ruamel round-trip), is validated against the file's
pydantic model before anything is written, and replaces the file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from mim.params.edit import edit_file


@task(task_run_name="set params/{name}.yaml")
def set_params(project: str, name: str, updates: dict[str, Any]) -> list[str]:
    """Write `updates` ({dotted key: value}; None writes null) into `params/<name>.yaml`; returns changed keys."""
    if not updates:
        return []
    changed = edit_file(Path(project) / "params" / f"{name}.yaml", updates)
    if changed:
        get_run_logger().info("params/%s.yaml: set %s", name, ", ".join(f"{k}={updates[k]!r}" for k in changed))
    return changed
