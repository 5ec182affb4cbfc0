"""`mim up`, `mim serve` and `mim deploy` given bad ports, a server that fails to start, or a Prefect URL nothing
answers: one line, an exit code, no traceback, and no server left half-started (docs/faults.md, "Services")."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from mim.cli.main import main
from mim.project import services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    return tmp_path


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line]


def test_up_refuses_a_port_out_of_range(root, capsys):
    for flag, value in (("--prefect-port", "99999"), ("--mlflow-port", "0"), ("--mlflow-port", "http")):
        with pytest.raises(SystemExit) as stop:
            main(["up", flag, value])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        want = f"not a port number: {value!r}" if value == "http" else f"port {value} is out of range: choose 1-65535"
        assert _error_lines(err) == [f"mim up: error: argument {flag}: {want}"], err
    assert not (root / ".mim").exists()  # refused before anything started


def test_up_refuses_one_port_for_both_servers(root, capsys):
    port = _free_port()
    assert main(["up", "--prefect-port", str(port), "--mlflow-port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"mim up: error: prefect and mlflow cannot share port {port}: choose two ports "
                                "(mim up --prefect-port N --mlflow-port M)"], err
    assert not (root / ".mim/services.json").exists() and not _listening(port)


@pytest.mark.slow
def test_up_stops_mlflow_when_prefect_fails_to_start(root, capsys, monkeypatch, request):
    """A Prefect server that exits at start (here: an invalid Prefect setting in the environment) while MLflow starts:
    one line with the cause and the log, and the MLflow server `mim up` had just started is stopped."""
    request.addfinalizer(lambda: services.down(root))  # a regression that left a server running does not leak it
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "NOPE")
    pp, mp = _free_port(), _free_port()
    assert main(["up", "--prefect-port", str(pp), "--mlflow-port", str(mp)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"mim up: error: prefect server on port {pp} exited: "), err
    assert f"(log: {root / '.mim/prefect.log'}); stopped mlflow, started with it" in err, err
    assert "ValidationError: 2 validation errors for LoggingSettings" in err  # the cause, from the log
    assert "Traceback" in (root / ".mim/prefect.log").read_text()  # the whole story stays in the log
    assert _processes_naming(str(root / ".mim/mlflow.db")) == [] and not _listening(mp)
    assert json.loads((root / ".mim/services.json").read_text()) == {}
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL")
    assert main(["status"]) == 0  # and `mim status` agrees: nothing runs
    out = capsys.readouterr().out
    assert "prefect  not running" in out and "mlflow   not running" in out, out


def test_serve_and_deploy_with_a_url_nothing_answers(tmp_path, monkeypatch, capfd):
    """PREFECT_API_URL set, nothing listening there: one line before any flow code runs (the real commands, in this
    process; `os.execve` is fenced so that a regression fails the test instead of replacing pytest)."""

    def _no_exec(*args: object) -> None:
        raise AssertionError(f"mim serve started the flows against a server that does not answer: {args[1]}")

    api = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", api + "/")
    monkeypatch.setattr(os, "execve", _no_exec)
    for args in (["serve"], ["deploy", "--pool", "gpu"]):
        assert main(args) == 1
        err = capfd.readouterr().err
        assert err.splitlines() == [f"mim {args[0]}: error: the Prefect server at {api} does not answer: "
                                    "start it with `mim up` (or set PREFECT_API_URL)"], err
    assert os.listdir(tmp_path) == []  # nothing written


def test_a_server_that_refuses_us_still_answers(tmp_path):
    """A server that replies with an HTTP error (an API key missing, as on Prefect Cloud) is up: only no reply at
    all is 'does not answer'."""
    import http.server
    import threading

    from mim.cli.deployments import answers

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert answers(f"http://127.0.0.1:{server.server_address[1]}/api")
    finally:
        server.shutdown()
        server.server_close()
    assert not answers(f"http://127.0.0.1:{server.server_address[1]}/api")
