"""File I/O shared by every layer: atomic writes and whole-file reads through fsspec (local paths or URLs).

Everything that writes an output (checkpoints, exported encoders, prepared data, the tokenizer, pictures, metrics)
goes through `atomic_write` (or `atomic_write_bytes`), so a reader (or a resumed run) sees the old file or the new
one, never half; a write that fails (a full disk, an I/O error) removes its temporary file, keeps the previous file
and raises `OutputWriteError` naming the path and the cause.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import fsspec


class OutputWriteError(OSError):
    """An output could not be written (disk full, quota, I/O error, permissions); the previous file is untouched.
    `filename` is the output's path or URL, `errno` the cause's."""

    @classmethod
    def of(cls, url: str, cause: OSError, kept: bool) -> OutputWriteError:
        reason = cause.strerror or str(cause) or type(cause).__name__
        tail = "the previous file is kept" if kept else "nothing was written there"
        return cls(cause.errno, f"could not write {url}: {reason} ({tail})", url)

    def __str__(self) -> str:
        return self.strerror or ""


class MissingPackageError(ImportError):
    """A package the asked-for feature needs is not installed (s3:// without s3fs, the Lite0 teacher without
    `mim[teacher]`); the message names the package and the pip command that installs it."""


def import_optional(module: str, package: str, extra: str, needed_by: str, otherwise: str = "") -> ModuleType:
    """`module` imported, or a `MissingPackageError` in one line: what needs it, the package, and the extra of mim
    that installs it (`otherwise`, when given: another way to go on without it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        tail = f"; {otherwise}" if otherwise else ""
        raise MissingPackageError(f"{needed_by} needs the {package} package: pip install 'mim[{extra}]'{tail}",
                                  name=module) from None


class UnreachableError(OSError):
    """A URL whose server could not be reached (connection refused, no route, timeout) or refused the request:
    not the same as a file that does not exist."""

    def __str__(self) -> str:
        return self.strerror or ""


HTTP_TIMEOUT_S = 60.0  # http(s) sources: seconds to connect, and without a byte, before a run gives up


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's (file system, path) of a local path or URL; `MissingPackageError` naming the URL and the package
    to install when its file system's package is missing."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        if scheme in ("http", "https"):  # a server that accepts and never answers must not hang a run
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT_S, sock_read=HTTP_TIMEOUT_S)
            return fsspec.core.url_to_fs(url, client_kwargs={"timeout": timeout})
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        package = getattr(err.__cause__, "name", None) or str(err)
        raise MissingPackageError(f"{url}: {scheme}:// URLs need the {package} package (pip install {package})"
                                  ) from None


def check_reachable(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    """For an http(s) URL, `UnreachableError` naming the URL and the cause when its server does not answer (or
    answers with an error other than 404); nothing for other file systems or a URL that answers or does not exist
    (the caller says "does not exist")."""
    if not {"http", "https"} & set((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        return
    import aiohttp

    try:
        fs.exists(path, strict=True)
    except FileNotFoundError:
        return
    except aiohttp.ClientResponseError as err:
        raise UnreachableError(errno.EIO, f"{url}: the server answered {err.status} {err.message}", url) from None
    except (TimeoutError, aiohttp.ClientError, fsspec.exceptions.FSTimeoutError, OSError) as err:
        cause = str(err) or type(err).__name__
        raise UnreachableError(errno.EHOSTUNREACH, f"could not reach {url} ({cause})", url) from None


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, fsspec.implementations.local.LocalFileSystem)


def _file_in_the_way(path: str) -> str | None:
    """The nearest existing ancestor of local `path` (or `path` itself) when it is a file, not a folder."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return None if p.is_dir() else str(p)


def check_output_folder(folder: str, target: str | None = None) -> None:
    """Fail before any work when nothing could be written under `folder` (for the output `target`, default the
    folder itself): a file in the way, a read-only or not writable location (`OutputWriteError`), a file system
    whose package is missing, or `memory://`, whose files vanish when this process exits (ValueError)."""
    target = target or folder
    fs, path = filesystem(folder)
    if "memory" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        raise ValueError(f"{target}: files under memory:// vanish when this process exits, so the outputs would be "
                         "lost; give a folder or a persistent URL (s3://, gs://, ...)")
    if not _is_local(fs):
        return
    if blocker := _file_in_the_way(path):
        raise OutputWriteError.of(target, OSError(errno.ENOTDIR, f"{blocker} is a file, not a folder"), kept=False)
    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
        raise OutputWriteError.of(target, OSError(code, f"{existing}: {os.strerror(code)}"), kept=False)


class _Recording:
    """A file object that remembers the OSError its `write` raised: some writers turn it into another error
    (torch.save's zip writer raises a RuntimeError about the file position), which would hide the cause."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f, self.error = f, None

    def write(self, data: bytes) -> int | None:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)


def atomic_write(url: str, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(f)` on a temporary sibling of `url` opened for binary writing, then rename it over `url`
    (os.replace locally, fsspec `mv` elsewhere). Writers that stream (torch.save, savefig, np.save) never need the
    whole file in memory. On an OSError the temporary file is removed and `OutputWriteError` raised."""
    fs, path = filesystem(url)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    kept, recording = False, None
    try:
        kept = fs.exists(path)
        parent = os.path.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            recording = _Recording(f)
            write(recording)
            f.flush()
            if _is_local(fs):
                os.fsync(f.fileno())
        if _is_local(fs):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
    except BaseException as err:
        _remove_quietly(fs, tmp)
        if isinstance(err, OutputWriteError) or not isinstance(err, Exception):
            raise
        cause = err if isinstance(err, OSError) else recording.error if recording else None
        if cause is None:
            raise
        if isinstance(cause, FileExistsError | NotADirectoryError) and _is_local(fs) and (
                blocker := _file_in_the_way(os.path.dirname(path))):
            cause = OSError(cause.errno, f"{blocker} is a file, not a folder")
        raise OutputWriteError.of(url, cause, kept) from err


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` atomically (see `atomic_write`)."""
    atomic_write(url, lambda f: f.write(data))


def write_text(url: str, text: str) -> None:
    """Write a small text output (JSON, CSV, YAML) atomically."""
    atomic_write_bytes(url, text.encode())


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_bytes(url: str, what: str = "file") -> bytes:
    """The whole file at `url`; FileNotFoundError naming `what` when it does not exist, IsADirectoryError when it
    is a folder, `UnreachableError` when its server does not answer."""
    fs, path = filesystem(url)
    check_reachable(fs, path, url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no {what} there")
    if fs.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{url} is a folder, not the {what} file", url)
    with fs.open(path, "rb") as f:
        return f.read()


class DamagedFileError(ValueError):
    """A file a stage wrote that cannot be read back (cut short, overwritten, edited by hand): the message names
    the file and the command that writes it again."""


def load_npy(path: str | Path, rebuild: str, mmap_mode: str | None = None) -> Any:
    """`np.load` of a .npy file (no pickles); a damaged file is a `DamagedFileError` saying how to `rebuild` it."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; {rebuild}") from None
    except (ValueError, EOFError, OSError) as err:
        raise DamagedFileError(f"{path}: not a readable .npy array ({err}); {rebuild}") from None


def read_json_object(path: str | Path, rebuild: str) -> dict[str, Any]:
    """The JSON object in a local file; invalid JSON or another JSON value is a `DamagedFileError` saying how to
    `rebuild` the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path}: not valid JSON ({err}); {rebuild}") from None
    if not isinstance(value, dict):
        raise DamagedFileError(f"{path}: expected a JSON object, got {type(value).__name__}; {rebuild}")
    return value


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_md5(path: Path) -> str:
    """md5 of a file; for a directory, md5 of its sorted (relative path, md5) listing, suffixed `.dir` like DVC."""
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        return "missing"
    listing = [{"md5": file_md5(p), "relpath": p.relative_to(path).as_posix()}
               for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def pid_alive(pid: int) -> bool:
    """True while process `pid` of this host runs. A zombie (exited, never reaped: a killed run whose parent died
    too, in a container whose PID 1 reaps nothing) does not run, though `kill(pid, 0)` still finds it; a process
    whose main thread has exited while other threads still run (it shows as a zombie too) does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    if not Path("/proc/self").is_dir():  # no /proc (macOS): kill's answer stands
        return True
    try:
        if _running(Path(f"/proc/{pid}/stat")):
            return True
        return any(_running(task) for task in Path(f"/proc/{pid}/task").glob("*/stat"))
    except OSError:  # it has just gone
        return False


def _running(stat_file: Path) -> bool:
    stat = stat_file.read_text()
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")  # the state letter follows "(command) "
