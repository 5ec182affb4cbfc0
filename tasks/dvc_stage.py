"""`repro(stage)`: one `dvc repro <stage>` as a Prefect task, its output streamed into the flow run's logs.

DVC's cache decides whether the stage runs. DVC locks its workspace, so every DVC call of this
project goes through `project_lock` (an advisory file lock): one call at a time, even across flow runs.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger, task

_SKIPPED = re.compile(r"Stage '(?P<stage>[^']+)' didn't change, skipping")
_RAN = re.compile(r"Running stage '(?P<stage>[^']+)'")


class StageFailed(RuntimeError):
    """`dvc repro` exited non-zero; the message carries the end of its output."""


@contextmanager
def project_lock(project: Path) -> Iterator[None]:
    """Hold the project's DVC lock (blocking) for the duration of the block."""
    path = project / ".dvc" / "tmp" / "mim-flow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tool_env() -> dict[str, str]:
    """This interpreter's bin directory first on PATH, so `dvc` and the stages' `mim` are this environment's."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@task(retries=1, retry_delay_seconds=5, task_run_name="dvc repro {stage}")
def repro(stage: str, project: str) -> dict[str, list[str]]:
    """Run `dvc repro <stage>` (upstream stages included; "" = the whole graph) in `project`.

    Returns the stages that ran and those DVC skipped as unchanged."""
    logger = get_run_logger()
    tail: deque[str] = deque(maxlen=40)
    ran, skipped = [], []
    cmd = ["dvc", "repro", *([stage] if stage else [])]
    proc = subprocess.Popen(cmd, cwd=project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        tail.append(line)
        logger.info("%s", line)
        if m := _RAN.search(line):
            ran.append(m["stage"])
        elif m := _SKIPPED.search(line):
            skipped.append(m["stage"])
    if code := proc.wait():
        raise StageFailed(f"`dvc repro {stage}` exited with {code}:\n" + "\n".join(tail))
    return {"ran": ran, "skipped": skipped}
