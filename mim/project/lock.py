"""An exclusive lock on a run's output folder for the run's duration, so two runs cannot mix their files.

The lock is a file created atomically (`O_CREAT | O_EXCL`) that holds the owner's PID and host. A second run is
refused with a line naming the folder and that PID; a lock left by a process that is no longer running (on this
host) is taken over with one log line. Only local folders are locked: at an fsspec URL (s3://, gs://) no lock is
taken, since those stores have no atomic create-if-absent that every backend honours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mim.io import pid_alive

log = logging.getLogger("mim")
LOCK_FILE = ".mim.lock"  # inside a one-off run's folder
STARTING_S = 10.0  # an empty lock file younger than this is a run still writing its PID


class FolderLockedError(ValueError):
    """Another live run holds the lock (a ValueError, so the CLI reports it in one line)."""


def lock_file_of(folder: str | Path) -> str:
    return f"{str(folder).rstrip('/')}/{LOCK_FILE}"


def _holder(path: Path) -> tuple[int | None, str]:
    """(PID, host) written in the lock file; (None, "") while it is empty or unreadable."""
    try:
        pid, _, host = path.read_text().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _stale(path: Path, pid: int | None, host: str) -> bool:
    """True when the lock's owner is known to be gone: a dead PID of this host, or an empty file left by a run
    killed between creating it and writing its PID."""
    if pid is None:
        try:
            return time.time() - path.stat().st_mtime > STARTING_S
        except FileNotFoundError:
            return True
    return host == socket.gethostname() and not pid_alive(pid)


def acquire(path: str | Path, what: str) -> None:
    """Create lock file `path` for this process, taking over one whose owner is gone; `what` names the locked
    folder in messages. Raises `FolderLockedError` naming the owner's PID when a live run holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _holder(path)
            if not _stale(path, pid, host):
                owner = f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") \
                    if pid is not None else "a run that is starting"
                raise FolderLockedError(f"{what} is in use by another run ({owner}, lock file {path}); wait for it "
                                        "to end or write elsewhere") from None
            # move the stale file aside (atomic: of two runs taking it over, one gets it), then check it was the
            # one judged stale, not a lock a third run has just created
            aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            if _holder(aside) == (pid, host):
                log.warning("%s: taking over the lock of PID %s, which is no longer running", what, pid)
            else:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)  # a live run's lock: put it back
            os.unlink(aside)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise FolderLockedError(f"{what}: could not take the lock {path} (other runs keep taking it)")


def release(path: str | Path) -> None:
    """Remove lock file `path` if this process holds it."""
    path = Path(path)
    if _holder(path)[0] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def holding(path: str, what: str) -> Iterator[None]:
    """Hold lock file `path` for the block. Nothing is locked at an fsspec URL, or in a process that torchrun
    started (RANK set): the process that launched it holds the lock for all its ranks."""
    if "://" in path or "RANK" in os.environ:
        yield
        return
    acquire(path, what)
    try:
        yield
    finally:
        release(path)
