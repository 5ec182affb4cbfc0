"""What a run was made from: git commit, file hashes (DVC's md5 scheme), flattened params."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mim.io import file_md5, path_md5

__all__ = ["file_md5", "flatten", "git_commit", "path_md5"]


def git_commit(cwd: Path) -> str:
    """HEAD's sha, suffixed `-dirty` when tracked files changed; `unknown` outside a git work tree."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists and tuples as JSON."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out
