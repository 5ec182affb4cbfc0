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


def test_a_series_and_tags_go_to_the_store_in_one_write_each():
    """The fine-tuning loss curve (79 points in the demo) and a stage's tags: one `log_batch` each, not one store
    write per point or tag (each is an sqlite commit: docs/benchmarks.md)."""
    import inspect

    import mlflow

    calls = []

    class Client:
        def log_batch(self, run_id, **kw):
            calls.append((run_id, kw))

    run = StageRun("transfer", "mae", enabled=True)
    run._client, run.run_id = Client(), "r1"
    run.log_metric_history("transfer/finetune_loss", [1, 2, 3], [0.9, 0.5, 0.25])
    run.set_tags({"scratch_of": "mae", "dvc.dep.encoder": "abc"})
    while not run._queue.empty():
        run._queue.get()()
    assert len(calls) == 2 and all(c[0] == "r1" and c[1]["synchronous"] for c in calls)
    series, tags = calls[0][1]["metrics"], calls[1][1]["tags"]
    assert [(m.key, m.step, m.value) for m in series] == [("transfer/finetune_loss", 1, 0.9),
                                                          ("transfer/finetune_loss", 2, 0.5),
                                                          ("transfer/finetune_loss", 3, 0.25)]
    assert {t.key: t.value for t in tags} == {"scratch_of": "mae", "dvc.dep.encoder": "abc"}
    for _, kw in calls:  # the real client takes these calls
        inspect.signature(mlflow.MlflowClient.log_batch).bind(None, "r1", **kw)
    run.log_metric_history("x", list(range(2500)), [0.0] * 2500)  # long series: batches of at most 1000 points
    assert run._queue.qsize() == 3


def test_a_model_is_logged_for_torch_alone_and_a_failure_only_warns(tmp_path, monkeypatch, caplog):
    """`log_model`: the module comes back from the run with mlflow.pytorch alone, at another batch size; one that
    torch.export cannot trace is a warning and the run still ends FINISHED."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch

    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MIM_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x  # a branch on the data: no graph to export

    linear = torch.nn.Linear(4, 3)
    with StageRun("pretrain", "mae") as run:
        run.log_model(Branchy(), "branchy", np.ones((2, 4), np.float32))
        run.log_model(linear, "encoder", np.zeros((2, 4), np.float32), {"pool": "mean"})
    assert "MLflow: the model 'branchy' was not logged" in caplog.text
    assert mlflow.MlflowClient().get_run(run.run_id).info.status == "FINISHED"
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/encoder")
    assert torch.allclose(loaded(x), linear(x), atol=1e-6)
