"""`StageRun`: one MLflow run per stage execution, nested under the flow's parent run when there is one.

Every call is best-effort and asynchronous: calls go through a queue to one worker thread, so a slow
or unreachable tracking server never stalls training; an outage is reported once as a warning and the
run goes on. Only global rank 0 tracks.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mim.io import MissingPackageError, import_optional, write_text
from mim.project.state import project_dir
from mim.tracking.lineage import flatten, git_commit
from mim.tracking.timings import timed
from mim.tracking.uri import artifact_root, experiment_name, tracking_uri

log = logging.getLogger("mim.tracking")
PARENT_RUN_ENV = "MIM_PARENT_RUN_ID"
TRACKING_ENV = "MIM_TRACKING"  # on/off (or true/false, 1/0, yes/no, any case)
_SWITCH = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}
RETRY_S = 15.0  # during an outage, calls are dropped and the server is tried again every RETRY_S seconds
_STOP = object()
RUN_NOTE = "mlflow_run_id"  # beside a stage's checkpoint: the run that wrote it
# the tag the MLflow 3 UI reads to choose an experiment's landing page: "custom_model_development" (shown as
# "Machine learning") opens on the runs table and charts; untagged ones may be taken for GenAI (traces)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def tracking_enabled() -> bool:
    """MIM_TRACKING's switch (default on), on global rank 0 only; a word it does not know is an error, never "on"."""
    word = os.environ.get(TRACKING_ENV, "on")
    if word.strip().lower() not in _SWITCH:
        raise ValueError(f"{TRACKING_ENV}={word!r}: not a switch; use on or off (also true/false, 1/0, yes/no)")
    return _SWITCH[word.strip().lower()] and os.environ.get("RANK", "0") == "0"


def connect(root: Path | None = None) -> tuple[Any, str]:
    """Import mlflow pointed at this project's store; returns (mlflow module, experiment id). The experiment is
    marked a model-training one (created so, or tagged when an older one lacks the mark), so that the MLflow UI
    opens it on the runs table and charts, not on the GenAI traces page. `MissingPackageError` without mlflow."""
    # Fail fast on an unreachable server instead of mlflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow = import_optional("mlflow", "mlflow", "pipeline", f"MLflow tracking ({TRACKING_ENV} is on)",
                             otherwise=f"or set {TRACKING_ENV}=off")

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    name = experiment_name()
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        exp_id = mlflow.create_experiment(name, artifact_location=artifact_root(uri, root),
                                          tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    else:
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # a kind someone chose on purpose is kept
            mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return mlflow, exp_id


class StageRun:
    """Context manager around one run: `log_metrics`, `log_params`, `log_artifact`, `log_dataset`, `set_tags`,
    `log_model`."""

    def __init__(self, stage: str, method: str | None = None, *, tags: dict[str, str] | None = None,
                 enabled: bool | None = None, system_metrics: bool = True, run_name: str | None = None) -> None:
        self.stage, self.method = stage, method
        self.run_name = run_name or (f"{stage}@{method}" if method else stage)
        self.enabled = tracking_enabled() if enabled is None else enabled
        self.tags = tags or {}
        self.system_metrics = system_metrics
        self.run_id: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._failing = False
        self._retry_at = 0.0
        self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        if not self.enabled:
            return self
        with timed("mlflow_s"):  # the blocking part of tracking: the stage's per-stage seconds show it
            return self._start()

    def _start(self) -> StageRun:
        root = project_dir()
        try:
            self._mlflow, exp_id = connect(root)
            tags = {"stage": self.stage, "method": self.method or "", "git_commit": git_commit(root),
                    "mlflow.source.name": f"mim {self.stage}", **self.tags}
            parent = os.environ.get(PARENT_RUN_ENV) or None
            self._client = self._mlflow.MlflowClient()
            if self.system_metrics:  # mlflow samples CPU/GPU/memory for the fluent active run only
                active = self._mlflow.start_run(experiment_id=exp_id, run_name=self.run_name, tags=tags,
                                                parent_run_id=parent, log_system_metrics=True)
                self.run_id = active.info.run_id
            else:
                tags = {**tags, "mlflow.parentRunId": parent} if parent else tags
                self.run_id = self._client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
        except MissingPackageError:  # an install to fix (or tracking to switch off), not an outage to ride out
            raise
        except Exception as err:  # noqa: BLE001 - tracking must never stop the stage
            self._warn(err)
            self.enabled = False
            return self
        log.info("MLflow run %s (%s) in %s", self.run_id, self.run_name, self._mlflow.get_tracking_uri())
        self._worker = threading.Thread(target=self._drain, name="mim-mlflow", daemon=True)
        self._worker.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        stopped = exc_type is not None and issubclass(exc_type, KeyboardInterrupt | SystemExit)
        self.close("FINISHED" if exc_type is None else "KILLED" if stopped else "FAILED")

    def follow_checkpoint(self, ckpt_url: str) -> str | None:
        """Link this run to the earlier run of the same stage that did not end (its id is kept beside the
        checkpoint until the stage completes): mark that run KILLED if it never ended (its process was killed),
        and when its checkpoint is there to resume from, tag `mim.continues_run` with its id (returned). Then
        record this run as the checkpoint's writer."""
        if not self.enabled or self.run_id is None:
            return None
        note = Path(ckpt_url).parent / RUN_NOTE
        earlier = note.read_text().strip() if note.is_file() else None
        continues = earlier if earlier and earlier != self.run_id and Path(ckpt_url).is_file() else None
        if earlier and earlier != self.run_id:
            def link() -> None:
                if continues:
                    self._client.set_tag(self.run_id, "mim.continues_run", continues)
                if self._client.get_run(earlier).info.status == "RUNNING":
                    self._client.set_terminated(earlier, "KILLED")
            self._submit(link)
        write_text(str(note), self.run_id + "\n")
        return continues

    def close(self, status: str = "FINISHED", timeout_s: float = 60.0) -> None:
        """Flush queued calls (at most `timeout_s`), then end the run with `status`."""
        if not self.enabled or self._worker is None:
            return
        with timed("mlflow_s"):
            self._close(status, timeout_s)

    def _close(self, status: str, timeout_s: float) -> None:
        self._queue.put(_STOP)
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            log.warning("MLflow: gave up flushing after %.0f s; some values were not logged", timeout_s)
        if self.system_metrics:
            self._call(lambda: self._mlflow.end_run(status=status))
        else:
            self._call(lambda: self._client.set_terminated(self.run_id, status))
        self._worker = None

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued call was made (or dropped); False if `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    # -- logging (never blocks, never raises) ----------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._submit(lambda: self._client.log_batch(self.run_id, metrics=batch, synchronous=True))

    def log_metric_history(self, key: str, steps: list[int], values: list[float]) -> None:
        """A whole series of `key` (a value per step) in batches of 1000 points, one store write each (point by point,
        a fine-tuning curve was 79 sqlite commits that the run's close waited for: docs/benchmarks.md)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(v), now, int(s)) for s, v in zip(steps, values, strict=True)]
        for i in range(0, len(points), 1000):
            chunk = points[i : i + 1000]
            self._submit(lambda c=chunk: self._client.log_batch(self.run_id, metrics=c, synchronous=True))

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        flat = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            chunk = flat[i : i + 100]
            self._submit(lambda c=chunk: self._client.log_batch(self.run_id, params=c, synchronous=True))

    def set_tags(self, tags: dict[str, str]) -> None:
        """All of `tags` in one store write (`set_tag` would make one per tag)."""
        if not self.enabled or not tags:
            return
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._submit(lambda: self._client.log_batch(self.run_id, tags=batch, synchronous=True))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            log_fn = self._client.log_artifacts if Path(path).is_dir() else self._client.log_artifact
            self._submit(lambda: log_fn(self.run_id, str(path), artifact_path))

    def log_model(self, model: Any, name: str, input_example: Any, metadata: dict[str, Any] | None = None) -> None:
        """A torch module as this run's MLflow model `name` (`mlflow.pytorch.log_model`, MLflow's default torch.export
        format, traced on `input_example`): `mlflow.pytorch.load_model` of its models:/ or runs:/ URI gives it back
        with no mim import. Synchronous, after the queued calls: the fluent API logs to the active run of the
        thread that started it. Best-effort: a failure is a warning, the stage goes on."""
        if not self.enabled or self.run_id is None:
            return
        with timed("mlflow_s"):
            self.flush()
            try:
                from importlib.metadata import version

                import mlflow.pytorch

                active = self._mlflow.active_run()
                if active is None or active.info.run_id != self.run_id:
                    raise RuntimeError("the run is not the active fluent run (a run without system metrics)")
                mlflow.pytorch.log_model(model, name=name, input_example=input_example, metadata=metadata,
                                         pip_requirements=[f"torch=={version('torch')}"])
            except Exception as err:  # noqa: BLE001 - tracking must never stop the stage
                text = str(err).splitlines()[0][:300] if str(err) else ""
                log.warning("MLflow: the model %r was not logged (%s: %s); the stage's files are unaffected", name,
                            type(err).__name__, text)

    def log_image(self, key: str, png: bytes, step: int) -> None:
        """A PNG picture under `key` at `step` (`MlflowClient.log_image`): the UI's image panel shows every logged
        step of a key with a step slider. A no-op when tracking is off."""
        if not self.enabled:
            return

        def call() -> None:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(png)) as img:
                self._client.log_image(self.run_id, img.convert("RGB"), key=key, step=step, synchronous=True)

        self._submit(call)

    def log_dataset(self, name: str, source: str, digest: str, context: str = "training") -> None:
        """The data set's identity (`mlflow.log_input`): name, source URL and content digest."""
        if not self.enabled:
            return

        def call() -> None:
            from mlflow.data.http_dataset_source import HTTPDatasetSource
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import DatasetInput, InputTag
            from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

            entity = MetaDataset(HTTPDatasetSource(source), name=name, digest=digest)._to_mlflow_entity()
            self._client.log_inputs(self.run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

        self._submit(call)

    # -- internals -----------------------------------------------------------------------------
    def _submit(self, fn: Callable[[], Any]) -> None:
        self._queue.put(fn)

    def _drain(self) -> None:
        while (fn := self._queue.get()) is not _STOP:
            self._call(fn)
            self._queue.task_done()
        self._queue.task_done()

    def _call(self, fn: Callable[[], Any]) -> None:
        if self._failing and time.monotonic() < self._retry_at:
            self.failures += 1  # during an outage, calls are dropped until the next try (RETRY_S)
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            self.failures += 1
            if not self._failing:
                self._warn(err)
            self._failing = True
            self._retry_at = time.monotonic() + RETRY_S
            return
        if self._failing:
            log.warning("MLflow reachable again; logging resumed")
        self._failing = False

    def _warn(self, err: Exception) -> None:
        text = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        log.warning("MLflow tracking unavailable (%s: %s); the stage goes on, values are dropped until it answers",
                    type(err).__name__, text)


@contextmanager
def flow_run(name: str, tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """The parent run of one flow run: stage runs started below it (in subprocesses too) nest under it."""
    with StageRun("flow", run_name=name, tags=tags, system_metrics=False) as run:
        previous = os.environ.get(PARENT_RUN_ENV)
        if run.run_id:
            os.environ[PARENT_RUN_ENV] = run.run_id
        try:
            yield run
        finally:
            if previous is None:
                os.environ.pop(PARENT_RUN_ENV, None)
            else:
                os.environ[PARENT_RUN_ENV] = previous


def latest_run_ids(run_names: list[str]) -> dict[str, str]:
    """The id of the most recent finished run of each stage-run name (`pretrain@mae-0`, ...) in this project's store;
    {} when tracking is off or the store cannot be read (a report never fails for want of run ids)."""
    if not tracking_enabled():
        return {}
    try:
        with timed("mlflow_s"):
            mlflow, exp_id = connect()
            runs = mlflow.MlflowClient().search_runs([exp_id], filter_string="attributes.status = 'FINISHED'",
                                                     order_by=["attributes.start_time DESC"], max_results=5000)
    except MissingPackageError:
        raise
    except Exception as err:  # noqa: BLE001 - any store problem: report without ids
        log.warning("MLflow run ids unavailable (%s: %s)", type(err).__name__, err)
        return {}
    found: dict[str, str] = {}
    for run in runs:
        name = run.data.tags.get("mlflow.runName", "")
        if name in run_names and name not in found:
            found[name] = run.info.run_id
    return found
