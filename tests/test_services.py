"""Local Prefect and MLflow servers: start, reuse, talk to, stop."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mim.project import services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status == 200


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def project(tmp_path: Path):
    yield tmp_path
    services.down(tmp_path)


@pytest.mark.slow
def test_up_reuse_log_to_mlflow_and_down(project: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    pp, mp = _free_port(), _free_port()
    (project / ".mim").mkdir()
    stale = {"name": "mlflow", "pid": _dead_pid(), "port": mp, "url": f"http://127.0.0.1:{mp}", "log": "x.log"}
    (project / ".mim" / "services.json").write_text(json.dumps({"mlflow": stale}))
    states = services.up(project, prefect_port=pp, mlflow_port=mp)
    assert states["mlflow"].pid != stale["pid"]
    assert states["prefect"].url == f"http://127.0.0.1:{pp}" and states["mlflow"].url == f"http://127.0.0.1:{mp}"
    assert _answers(f"http://127.0.0.1:{pp}/api/health") and _answers(f"http://127.0.0.1:{mp}/health")
    assert services.prefect_api_url(project) == f"http://127.0.0.1:{pp}/api"

    again = services.up(project, prefect_port=pp, mlflow_port=mp)
    assert {n: s.pid for n, s in again.items()} == {n: s.pid for n, s in states.items()}

    url = services.mlflow_url(project)
    assert url == f"http://127.0.0.1:{mp}"
    client = mlflow.MlflowClient(url)
    exp = client.create_experiment("svc-test")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5)
    client.set_terminated(run.info.run_id)
    artifact_root = client.get_experiment(exp).artifact_location
    assert str(project.resolve() / ".mim" / "mlartifacts") in artifact_root
    with sqlite3.connect(project / ".mim" / "mlflow.db") as db:
        rows = db.execute("SELECT run_uuid, status FROM runs WHERE experiment_id = ?", (int(exp),)).fetchall()
    assert rows == [(run.info.run_id, "FINISHED")]

    assert sorted(services.down(project)) == ["mlflow", "prefect"]
    for state in states.values():
        with pytest.raises(ProcessLookupError):
            os.kill(state.pid, 0)
    assert services.status(project) == {"prefect": None, "mlflow": None}
    assert services.mlflow_url(project) is None and services.prefect_api_url(project) is None
    assert services.down(project) == []


def test_stale_state_file_is_tolerated(project: Path) -> None:
    mim = project / ".mim"
    mim.mkdir()
    pid = _dead_pid()
    stale = {n: {"name": n, "pid": pid, "port": _free_port(), "url": "http://127.0.0.1:1", "log": str(mim / "x.log")}
             for n in ("prefect", "mlflow")}
    (mim / "services.json").write_text(json.dumps(stale))
    assert services.status(project) == {"prefect": None, "mlflow": None}
    assert services.mlflow_url(project) is None
    assert services.down(project) == []
    assert json.loads((mim / "services.json").read_text()) == {}
    (mim / "services.json").write_text("{not json")
    assert services.status(project) == {"prefect": None, "mlflow": None}


def test_foreign_process_on_port_is_reported(project: Path) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        with pytest.raises(services.ServiceError, match=rf"prefect: port {port} .*already in use.*another port"):
            services.up(project, prefect_port=port, mlflow_port=_free_port(), timeout_s=5)
    assert services.status(project) == {"prefect": None, "mlflow": None}


@pytest.mark.parametrize("script, timeout_s, why", [
    ("print('{name}: cannot open database'); raise SystemExit(3)", 30, "exited"),
    ("import time; print('{name}: still migrating', flush=True); time.sleep(60)", 1, "was not healthy after 1 s"),
], ids=["exits", "times-out"])
def test_failed_start_is_reported_and_stopped(project: Path, monkeypatch, script: str, timeout_s: float,
                                              why: str) -> None:
    monkeypatch.setattr(services, "_command", lambda name, port, mim: (
        [sys.executable, "-c", script.format(name=name)], {}))
    pp = _free_port()
    with pytest.raises(services.ServiceError, match=rf"(?s)prefect server on port {pp} {why}.*prefect: "):
        services.up(project, prefect_port=pp, mlflow_port=_free_port(), timeout_s=timeout_s)
    recorded = json.loads((project / ".mim" / "services.json").read_text())
    assert "prefect" not in recorded
