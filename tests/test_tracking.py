"""MLflow lineage: what a stage run records, and that an MLflow outage never stops training."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3

import pytest

from mim.project import services
from mim.tracking import StageRun, flatten, path_md5, tracking_uri
from tests.helpers import pretrain, tiny_params


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flatten_and_hashes(tmp_path):
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    first = path_md5(tmp_path / "d")
    assert first.endswith(".dir") and path_md5(tmp_path / "d") == first
    (tmp_path / "d" / "x").write_text("y")
    assert path_md5(tmp_path / "d") != first and path_md5(tmp_path / "nope") == "missing"


def test_tracking_uri_prefers_env_then_server_then_project_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path / '.mim' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:1"


def test_disabled_tracking_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "1")  # not global rank 0: never logs
    with StageRun("pretrain", "mae") as run:
        run.log_metrics({"train/loss": 1.0}, 1)
    assert run.run_id is None and not (tmp_path / ".mim").exists()


@pytest.mark.slow
def test_mlflow_outage_mid_run_warns_and_training_completes(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MIM_PARENT_RUN_ID", raising=False)
    states = services.up(tmp_path, prefect_port=_free_port(), mlflow_port=_free_port())
    try:
        assert tracking_uri(tmp_path) == states["mlflow"].url
        params = tiny_params(train__steps=12, train__log_every_steps=100)
        with StageRun("pretrain", "mae", system_metrics=False) as run:
            assert run.run_id is not None

            def on_metrics(step: int, metrics: dict[str, float]) -> None:
                run.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
                if step == 4:  # the server dies after four logged steps
                    assert run.flush(30)
                    os.killpg(states["mlflow"].pid, signal.SIGKILL)

            result = pretrain(params, str(tmp_path / "out"), on_metrics=on_metrics)
        assert result.steps == 12 and (tmp_path / "out" / "encoder.safetensors").is_file()
        assert run.failures >= 8  # steps 5..12 could not be logged
        assert "MLflow tracking unavailable" in caplog.text
        db = sqlite3.connect(tmp_path / ".mim" / "mlflow.db")
        steps = sorted(s for (s,) in db.execute("select step from metrics where key='train/loss' and run_uuid=?",
                                                (run.run_id,)))
        assert steps == [1, 2, 3, 4]
    finally:
        services.down(tmp_path)
