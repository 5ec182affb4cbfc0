"""`repro(stage)`: one `dvc repro <stage>` as a Prefect task, its output streamed into the flow run's logs.

DVC's cache decides whether the stage runs. DVC locks its workspace, so every DVC call of this
project goes through `project_lock` (an advisory file lock): one call at a time, even across flow runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

_SKIPPED = re.compile(r"Stage '(?P<stage>[^']+)' didn't change, skipping")
_RAN = re.compile(r"Running stage '(?P<stage>[^']+)'")


class StageFailed(RuntimeError):
    """`dvc repro` exited non-zero; the message carries the end of its output."""


def _log(message: str, *args: object) -> None:
    """To the flow run's log when there is one, else to this module's logger."""
    try:
        get_run_logger().info(message, *args)
    except MissingContextError:
        logging.getLogger(__name__).info(message, *args)


@contextmanager
def project_lock(project: Path) -> Iterator[None]:
    """Hold the project's DVC lock (blocking) for the duration of the block.

    The lock is an advisory `flock`, which the kernel drops when its holder dies, so a killed flow never leaves it
    stuck; the file names its holder (pid, command) while held and is emptied on release, so a holder that died
    holding it is reported, and a wait names whom it waits for."""
    path = project / ".dvc" / "tmp" / "mim-flow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            _log("waiting for the project lock %s, held by %s", path,
                 f"pid {holder[0]} ({holder[1]})" if holder else "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
        if (left := _holder(f)) and left[0] != os.getpid():
            _log("recovered the project lock %s: its holder, pid %d (%s), died holding it", path, *left)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def _holder(f: IO[str]) -> tuple[int, str] | None:
    """(pid, command) from the lock file; None when it is empty (free) or holds something else."""
    f.seek(0)
    found = re.fullmatch(r"pid (\d+): (.*)", f.read().strip())
    return (int(found[1]), found[2]) if found else None


def clear_dead_dvc_locks(project: Path) -> list[tuple[int, str]]:
    """Drop the entries of processes that no longer run from DVC's `.dvc/tmp/rwlock` (edited under DVC's own guard);
    returns their (pid, command). DVC itself frees only the paths a later command needs, one warning per path, and
    leaves the rest (a killed `dvc repro`'s read locks on every dependency) in the file."""
    import psutil
    from dvc.config import Config
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    tmp = project / ".dvc" / "tmp"
    if not (tmp / "rwlock").is_file():
        return []
    dead: dict[int, str] = {}

    def live(info: dict) -> bool:
        if psutil.pid_exists(info["pid"]):
            return True
        dead[info["pid"]] = info["cmd"]
        return False

    hardlink = Config(dvc_dir=str(project / ".dvc"), validate=False)["core"].get("hardlink_lock", False)
    with _edit_rwlock(str(tmp), localfs, hardlink) as lock:
        for path, infos in list(lock["read"].items()):
            lock["read"][path] = [i for i in infos if live(i)]
            if not lock["read"][path]:
                del lock["read"][path]
        for path, info in list(lock["write"].items()):
            if not live(info):
                del lock["write"][path]
    return sorted(dead.items())


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
    for pid, cmd in clear_dead_dvc_locks(Path(project)):
        logger.warning("recovered DVC's lock %s: pid %d (%s) died holding it", Path(project, ".dvc/tmp/rwlock"),
                       pid, cmd)
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
