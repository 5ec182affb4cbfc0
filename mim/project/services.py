"""A project's local Prefect and MLflow servers on 127.0.0.1 (run through their CLIs), state in ``<project>/.mim/``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from mim.io import pid_alive
from mim.project.state import state_dir

HOST = "127.0.0.1"
NAMES = ("prefect", "mlflow")
HEALTH = {"prefect": "/api/health", "mlflow": "/health"}
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000}


class ServiceError(RuntimeError):
    """A service could not be started (port taken, crashed, or not healthy in time)."""


@dataclass
class ServiceState:
    """One running server: its process (group leader) id, port, base URL and log file."""

    name: str
    pid: int
    port: int
    url: str
    log: Path


def _read(project_dir: Path) -> dict[str, ServiceState]:
    try:
        raw = json.loads((state_dir(project_dir) / "services.json").read_text())
        return {n: ServiceState(**{**s, "log": Path(s["log"])}) for n, s in raw.items() if n in NAMES}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _write(project_dir: Path, states: dict[str, ServiceState]) -> None:
    path = state_dir(project_dir) / "services.json"
    tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps({n: {**asdict(s), "log": str(s.log)} for n, s in states.items()}, indent=2) + "\n")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    """Our own child runs until it is reaped (here, so no zombie lingers); any other process while `pid_alive`."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (another `mim up` started it), or already reaped
        return pid_alive(pid)
    return reaped == 0


def _healthy(state: ServiceState, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(state.url + HEALTH[state.name], timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _port_free(port: int) -> bool:
    try:
        socket.create_server((HOST, port)).close()  # SO_REUSEADDR, as the servers set it: TIME_WAIT does not count
    except OSError:
        return False
    return True


def executable(name: str) -> str:
    """The path of a tool's executable: next to this interpreter, else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise ServiceError(f"{name}: executable not found next to {sys.executable} nor on PATH")
    return found


def _command(name: str, port: int, mim: Path) -> tuple[list[str], dict[str, str]]:
    if name == "prefect":
        home = mim / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
        return [executable("prefect"), "server", "start", "--host", HOST, "--port", str(port)], env
    artifacts = mim / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [executable("mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
           "--no-serve-artifacts", "--backend-store-uri", f"sqlite:///{mim / 'mlflow.db'}",
           "--default-artifact-root", str(artifacts)]
    return cmd, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: 7 fewer processes, 3x faster


_ERROR_LINE = re.compile(r"^([\w.]*(Error|Exception)\b|ERROR\b|Error\b)")  # `OSError: ...`, uvicorn's `ERROR: ...`


def _cause(log: Path, width: int = 160) -> str:
    """The log's last line that starts with an error (else its last line), cut to `width`: the cause, on one line."""
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        if last := (errors or lines)[-1:]:
            return last[0] if len(last[0]) <= width else last[0][:width] + "..."
    return "nothing in its log"


def _ours(state: ServiceState) -> bool:
    """Alive and, where /proc tells, still running the service's command (not a recycled pid)."""
    try:
        return _alive(state.pid) and state.name in Path(f"/proc/{state.pid}/cmdline").read_text(errors="replace")
    except OSError:
        return _alive(state.pid)


def _stop(state: ServiceState, wait_s: float = 15.0) -> None:
    if not _ours(state):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while _alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(state.pid):
            os.killpg(state.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while _alive(state.pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def up(project_dir: Path, prefect_port: int = 4200, mlflow_port: int = 5000,
       timeout_s: float = 120, names: tuple[str, ...] = NAMES) -> dict[str, ServiceState]:
    """Start the Prefect and MLflow servers (those in `names`) unless ours already run and answer; wait until they
    are healthy."""
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    for name in names:
        if not 1 <= ports[name] <= 65535:
            raise ServiceError(f"{name}: port {ports[name]} is out of range: choose 1-65535 (mim up --{name}-port N)")
    if set(NAMES) <= set(names) and prefect_port == mlflow_port:
        raise ServiceError(f"prefect and mlflow cannot share port {prefect_port}: choose two ports "
                           "(mim up --prefect-port N --mlflow-port M)")
    mim = state_dir(project_dir)
    mim.mkdir(parents=True, exist_ok=True)
    states = _read(project_dir)
    todo = []
    for name, port in (("prefect", prefect_port), ("mlflow", mlflow_port)):
        if name not in names:
            continue
        old = states.get(name)
        if old is not None and old.port == port and _alive(old.pid) and _healthy(old):
            continue
        if old is not None:
            _stop(old)
        if not _port_free(port):
            raise ServiceError(f"{name}: port {port} on {HOST} is already in use by a process that is not ours; "
                               f"stop that process or choose another port (mim up --{name}-port N)")
        todo.append((name, port))
    for name, port in todo:
        cmd, env = _command(name, port, mim)
        with open(mim / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(cmd, env=os.environ | env, cwd=mim, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        states[name] = ServiceState(name, proc.pid, port, f"http://{HOST}:{port}", mim / f"{name}.log")
    _write(project_dir, states)
    started = [states[name] for name, _ in todo]
    deadline = time.monotonic() + timeout_s
    for state in started:
        while not _healthy(state):
            dead = not _alive(state.pid)
            if dead or time.monotonic() > deadline:
                # all or nothing: stop what this call started, so no server is left half-configured
                for other in started:
                    _stop(other)
                _write(project_dir, {n: s for n, s in states.items() if s not in started})
                why = "exited" if dead else f"was not healthy after {timeout_s:.0f} s"
                also = [s.name for s in started if s is not state]
                stopped = f"; stopped {', '.join(also)}, started with it" if also else ""
                kept = [f"; {s.name} was running before and still is ({s.url})" for s in states.values()
                        if s not in started and s.name in names]
                raise ServiceError(f"{state.name} server on port {state.port} {why}: {_cause(state.log)} "
                                   f"(log: {state.log}){stopped}{''.join(kept)}")
            time.sleep(0.25)
    return states


def down(project_dir: Path) -> list[str]:
    """Stop our recorded servers (SIGTERM to the process group, SIGKILL after 15 s); return the names stopped."""
    states = _read(project_dir)
    stopped = [name for name, state in states.items() if _ours(state)]
    for state in states.values():
        _stop(state)
    if states:
        _write(project_dir, {})
    return stopped


def recorded(project_dir: Path) -> dict[str, ServiceState]:
    """The servers `mim up` recorded, running or not."""
    return _read(project_dir)


def _live(project_dir: Path, name: str) -> ServiceState | None:
    state = _read(project_dir).get(name)
    return state if state is not None and _alive(state.pid) and _healthy(state) else None


def status(project_dir: Path) -> dict[str, ServiceState | None]:
    """Each service's state when it runs and answers its health check, else None."""
    return {name: _live(project_dir, name) for name in NAMES}


def mlflow_url(project_dir: Path) -> str | None:
    """The URL of this project's MLflow server when it runs and is healthy, else None."""
    state = _live(project_dir, "mlflow")
    return state.url if state else None


def prefect_api_url(project_dir: Path) -> str | None:
    """The API URL (``http://127.0.0.1:P/api``) of this project's Prefect server when it runs, else None."""
    state = _live(project_dir, "prefect")
    return f"{state.url}/api" if state else None
