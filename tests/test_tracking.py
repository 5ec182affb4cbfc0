"""MLflow lineage: what a stage run records, and that an MLflow outage never stops training."""

from __future__ import annotations

import socket

from mim.tracking import StageRun, flatten, path_md5, tracking_uri


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
