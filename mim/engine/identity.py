"""What made a checkpoint, so that a resume continues the same run or says what changed.

A run's identity is the resolved params that change its result, the digest of its training data, the digest of its
other inputs (tokenizer, teacher, a pre-trained encoder) and the digest of the `mim` source code. Settings that only
steer how a run goes (checkpoint and log intervals, workers, process count, device) are left out by the caller.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mim.models.state import CheckpointError

ResumePolicy = Literal["never", "auto", "force"]
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_digest() -> str:
    """The digest of this `mim` package's sources (read once per process)."""
    return source_digest(PACKAGE_ROOT)


def source_digest(root: Path) -> str:
    """sha256 over the Python sources under `root` (sorted relative path + bytes): any code edit changes it."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    params: dict[str, str]  # flattened dotted name -> JSON value
    data: str
    inputs: str
    code: str

    @classmethod
    def of(cls, params: dict[str, Any], *, data: str, inputs: str = "", code: str | None = None) -> RunIdentity:
        return cls(flat_values(params), data, inputs, code_digest() if code is None else code)

    def to_state(self) -> dict[str, str]:
        """Plain strings, so the checkpoint still loads with `weights_only=True`."""
        return {"params": json.dumps(self.params, sort_keys=True), "data": self.data, "inputs": self.inputs,
                "code": self.code}

    @classmethod
    def from_state(cls, state: dict[str, str]) -> RunIdentity:
        return cls(json.loads(state["params"]), state["data"], state["inputs"], state["code"])

    def changes_from(self, before: RunIdentity) -> list[str]:
        """What differs from `before`, one readable entry each (`optim.base_lr: 0.0005 -> 0.001`, `data ...`)."""
        out = [f"{key}: {before.params.get(key, '(unset)')} -> {self.params.get(key, '(unset)')}"
               for key in sorted(self.params.keys() | before.params.keys())
               if self.params.get(key) != before.params.get(key)]
        for what, old, new in (("training data", before.data, self.data), ("inputs", before.inputs, self.inputs),
                               ("code (mim/)", before.code, self.code)):
            if old != new:
                out.append(f"{what}: digest {old or '(none)'} -> {new or '(none)'}")
        return out


def flat_values(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"} (values as JSON)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def check_resume(url: str, saved: dict[str, str] | None, current: RunIdentity, policy: ResumePolicy,
                 knob: str) -> list[str]:
    """The changes between the checkpoint at `url` (its saved identity) and this run. With `auto`, any change is
    refused (CheckpointError naming them and `knob`, the setting that chooses); with `force` they are returned, for
    the caller to log and record."""
    if saved is None:
        changes = ["the checkpoint records no identity (written by an older mim)"]
    else:
        changes = current.changes_from(RunIdentity.from_state(saved))
    if changes and policy != "force":
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise CheckpointError(
            f"{url}: this checkpoint was made by a different run ({shown}); resuming would mix the two. Set {knob} "
            f"to never to start over (the checkpoint is replaced), or to force to continue from it on purpose")
    return changes
