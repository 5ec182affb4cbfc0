"""Services failing for real: Prefect and MLflow servers stopped, deployments nobody serves, locks left by killed
processes, and both servers under the pipeline's load (docs/faults.md, "Services")."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mim.project import services
from tests.pipeline_project import git, make_project

pytestmark = pytest.mark.slow
METHODS = ("mae",)  # the load test's methods matrix (every method runs in tests/test_pipeline.py)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """This environment without Prefect/MLflow pointers (each test names its own servers)."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_API", "PREFECT_HOME", "PREFECT_PROFILE", "MLFLOW_TRACKING", "MIM_PARENT"))}
    return {**keep, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def _mim(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mim.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    monkeypatch.setenv("MIM_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MIM_PARENT_RUN_ID", raising=False)
    return root


def test_flow_rejects_unknown_method_before_anything_runs(prefect_harness, project, tmp_path):
    from flows.pipeline import pipeline_flow
    from flows.pretrain import pretrain_flow

    before = (project / "params/mae.yaml").read_text()
    with pytest.raises(ValueError, match=r"unknown method 'dino'; params/pipeline.yaml's methods are mae, ccvit, "):
        pipeline_flow(methods=["mae", "dino"], steps=2)
    with pytest.raises(ValueError, match=r"unknown methods 'dino', 'byol'; params/pipeline.yaml's methods are mae"):
        pipeline_flow(methods=["dino", "byol"])
    with pytest.raises(ValueError, match=r"unknown method 'dino'"):
        pretrain_flow(method="dino")
    assert (project / "params/mae.yaml").read_text() == before  # no edit, no stage, no lock, no MLflow run
    assert not (project / "data/prepared").exists() and not (project / ".dvc/tmp/mim-flow.lock").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_down_at_start_stage_completes(tmp_path):
    """A stage whose tracking server does not answer warns once, writes its outputs and exits 0."""
    root = make_project(tmp_path / "proj")
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    done = _mim("prepare", env=_env(MIM_PROJECT_DIR=str(root), MLFLOW_TRACKING_URI=down), cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("MLflow tracking unavailable") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((root / "data/prepared/manifest.json").read_text())["splits"]["train"]["digest"]
    assert (root / "metrics/prepare/data.json").is_file()


def test_mlflow_logs_again_when_it_answers(tmp_path, monkeypatch, caplog):
    """The tracking server is killed mid-run and restarted on the same port and store: later steps arrive."""
    import mlflow

    from mim.tracking import run as tracking_run
    from mim.tracking.run import StageRun
    from tests.helpers import pretrain, tiny_params

    monkeypatch.setattr(tracking_run, "RETRY_S", 0.5)
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MIM_PARENT_RUN_ID", raising=False)
    port = _free_port()
    state = services.up(tmp_path, mlflow_port=port, names=("mlflow",))["mlflow"]
    caplog.set_level(logging.INFO, logger="mim.tracking")
    try:
        with StageRun("pretrain", "mae", system_metrics=False) as run:
            assert run.run_id is not None

            def on_metrics(step: int, metrics: dict[str, float]) -> None:
                run.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
                if step == 3:  # the server dies after three logged steps
                    assert run.flush(30)
                    os.killpg(state.pid, signal.SIGKILL)
                if step == 6:  # steps 4..6 are lost; then it comes back on the same port and database
                    run.flush(30)
                    again = services.up(tmp_path, mlflow_port=port, names=("mlflow",))["mlflow"]
                    assert again.pid != state.pid and again.url == state.url
                    time.sleep(tracking_run.RETRY_S + 0.2)

            result = pretrain(tiny_params(train__steps=10, train__log_every_steps=100), str(tmp_path / "out"),
                              on_metrics=on_metrics)
        assert result.steps == 10
        client = mlflow.MlflowClient(state.url)
        steps = sorted(m.step for m in client.get_metric_history(run.run_id, "train/loss"))
        assert steps[:3] == [1, 2, 3] and 4 not in steps and steps[-4:] == [7, 8, 9, 10], steps
        assert client.get_run(run.run_id).info.status == "FINISHED"
        assert caplog.text.count("MLflow tracking unavailable") == 1
        assert caplog.text.count("MLflow reachable again; logging resumed") == 1
    finally:
        services.down(tmp_path)


def _shrink_matrix(root: Path) -> None:
    """params/pipeline.yaml with the `METHODS` and one seed, and dvc.yaml with only the stages the pipeline flow
    runs for them (no tokenizer, teacher, transfer or report stages; pretrain without their inputs), committed."""
    (root / "params" / "pipeline.yaml").write_text(yaml.safe_dump(
        {"methods": {m: {"input": "data/prepared"} for m in METHODS}, "baselines": ["mae"], "seeds": [0],
         "transfer_seeds": [0]}))
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    for name in ("tokenizer", "teacher", "diversity", "transfer", "scratch", "report"):
        del spec["stages"][name]
    spec["stages"]["pretrain"]["deps"] = [d for d in spec["stages"]["pretrain"]["deps"]
                                          if d not in ("models/tokenizer", "models/teacher")]
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "two methods")


def _api(url: str, body: dict | None = None) -> object:
    from mim.cli.deployments import _call

    return _call(url, body)


def _flow_run_id(out: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert found, out
    return found[1]


def _wait(what: str, ok, timeout_s: float, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while not (value := ok()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(every_s)
    return value


def _logs(api: str, run_id: str) -> str:
    logs = _api(f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs)  # type: ignore[union-attr]


def _dead_lock_holder(root: Path, env: dict[str, str]) -> int:
    """A real process that takes the project lock and is SIGKILLed holding it; returns its pid."""
    code = ("import sys, time; from pathlib import Path; from tasks.dvc_stage import project_lock\n"
            "with project_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], env=env, cwd=root, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    return proc.pid


def _killed_dvc_repro(root: Path, env: dict[str, str]) -> int:
    """A real `dvc repro prepare` SIGKILLed (with its stage) while it runs; returns its pid."""
    proc = subprocess.Popen(["dvc", "repro", "prepare"], env={**env, "MIM_TRACKING": "off"}, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Running stage 'prepare'" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rwlock = json.loads((root / ".dvc/tmp/rwlock").read_text())
    assert any(info["pid"] == proc.pid for info in rwlock["write"].values())  # DVC's lock is left behind
    return proc.pid


def test_services_cli_and_the_pipeline_under_load(tmp_path, monkeypatch):
    """`mim status`/`mim run` with the servers down, `mim up`, `mim serve`, `pipeline/all` with every method of the
    matrix while `pretrain/mae` is queued behind it (after a killed flow and a killed `dvc repro` left their locks),
    a deployment nobody serves any more, then `mim down` restoring the Prefect profile."""
    import mlflow

    from mim.cli import deployments
    from mim.project.services import ServiceError

    root = make_project(tmp_path / "proj")
    _shrink_matrix(root)
    home = tmp_path / "prefect-home"
    env = _env(MIM_PROJECT_DIR=str(root), PREFECT_HOME=str(home))
    user_url = "http://127.0.0.1:1/api"  # the user's own setting, which `mim down` must put back
    home.mkdir()
    profile_before = f'active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "{user_url}"\n'
    (home / "profiles.toml").write_text(profile_before)

    # Servers down: one line naming the URL and `mim up`, no waiting.
    status = _mim("status", env=env, cwd=root)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "prefect  not running (http://127.0.0.1:4200): start it with `mim up`" in status.stdout
    assert f"the Prefect server at {user_url} does not answer: start it with `mim up`" in status.stdout
    run = _mim("run", "pipeline/all", env=env, cwd=root)
    assert run.returncode == 1
    assert run.stderr.strip() == (f"mim run: error: the Prefect server at {user_url} does not answer: start it "
                                  "with `mim up` (or set PREFECT_API_URL)")

    pp, mp = _free_port(), _free_port()
    up = _mim("up", "--prefect-port", str(pp), "--mlflow-port", str(mp), env=env, cwd=root, timeout=240)
    assert up.returncode == 0, up.stderr
    api = f"http://127.0.0.1:{pp}/api"
    serve = None
    try:
        assert f"PREFECT_API_URL = \"{api}\"" in (home / "profiles.toml").read_text()
        nothing = _mim("run", "pretrain/mae", env=env, cwd=root)
        assert nothing.returncode == 1 and "no deployment pretrain/mae on" in nothing.stderr
        assert "start `mim serve`" in nothing.stderr

        # Deployed on a work pool whose worker never started: the run would stay scheduled forever.
        deploy = _mim("deploy", "--pool", "nowhere", env=env, cwd=root)
        assert deploy.returncode == 0, deploy.stderr
        idle = _mim("run", "pretrain/mae", env=env, cwd=root)
        assert idle.returncode == 1 and idle.stderr.strip() == (
            "mim run: error: no worker is serving pretrain/mae: no worker has ever polled it (it expects work pool "
            "'nowhere'); start a worker: `prefect worker start --pool nowhere` (or serve it here: `mim serve`)")

        holder = _dead_lock_holder(root, env)
        dvc_pid = _killed_dvc_repro(root, env)
        with open(tmp_path / "serve.log", "w") as log:  # `mim serve` takes the pool's deployments over
            serve = subprocess.Popen([sys.executable, "-m", "mim.cli", "serve"], env=env, cwd=root, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _wait("mim serve to poll", lambda: (d := deployments.find(api, "pipeline/all")) and d.served(), 120)
        assert ("mim serve: pipeline/all was deployed on work pool 'nowhere'; it is served here now"
                in (tmp_path / "serve.log").read_text())
        status = _mim("status", env=env, cwd=root)
        assert re.search(r"pipeline/all +served", status.stdout)
        assert re.search(r"pretrain/mae +served", status.stdout)

        first = _mim("run", "pipeline/all", "-p", "steps=2", env=env, cwd=root)
        assert first.returncode == 0, first.stderr
        first_id = _flow_run_id(first.stdout)
        lock = root / ".dvc/tmp/mim-flow.lock"
        def taken() -> bool:  # the dead holder's line stays until a flow takes the lock
            found = re.match(r"pid (\d+):", lock.read_text())
            return found is not None and found[1] != str(holder)

        _wait("pipeline/all to take the project lock", taken, 120)
        second = _mim("run", "pretrain/mae", "-p", "evaluate=false", env=env, cwd=root)  # queued behind the lock
        assert second.returncode == 0, second.stderr
        second_id = _flow_run_id(second.stdout)

        def finished() -> list[dict] | None:
            runs = [_api(f"{api}/flow_runs/{i}") for i in (first_id, second_id)]
            return runs if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs) else None

        runs = _wait("both flow runs to finish", finished, 300, every_s=2)
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [_logs(api, i)[-3000:]
                                                                             for i in (first_id, second_id)]
        pipeline_log, queued_log = _logs(api, first_id), _logs(api, second_id)
        assert f"its holder, pid {holder} (" in pipeline_log and "died holding it" in pipeline_log
        assert pipeline_log.count(f"recovered DVC's lock {root}/.dvc/tmp/rwlock: pid {dvc_pid}") == 1
        assert "waiting for the project lock" in queued_log and "held by pid" in queued_log

        # Nothing lost: every stage's run and both parent runs finished; no lock left behind.
        client = mlflow.MlflowClient(f"http://127.0.0.1:{mp}")
        exp = client.get_experiment_by_name("mim")
        mlruns = client.search_runs([exp.experiment_id], max_results=200)
        names = sorted(r.info.run_name for r in mlruns)
        stages = ["baseline@mae-0", "evaluate@pixels", "prepare",
                  *(f"{s}@{m}-0" for m in METHODS for s in ("evaluate", "pretrain"))]
        assert names == sorted([*stages, "pipeline/all", "pretrain/mae"]), names
        assert {r.info.status for r in mlruns} == {"FINISHED"}
        assert lock.read_text() == ""
        rwlock = json.loads((root / ".dvc/tmp/rwlock").read_text())
        assert not rwlock.get("read") and not rwlock.get("write"), rwlock
        assert all(json.loads((root / f"metrics/pretrain/{m}/seed-0.json").read_text())["steps"] == 2
                   for m in METHODS)

        # Nothing serves the deployments any more: `mim run` says so instead of queueing a run forever.
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)
        monkeypatch.setattr(deployments, "SERVED_WITHIN_S", 1.0)  # Prefect's poll timeout is 60 s
        time.sleep(1.5)
        with pytest.raises(ServiceError, match=r"no worker is serving pipeline/all: last polled \d+ s ago \(it "
                                               r"expects a `mim serve` process\); start `mim serve`"):
            deployments.check_served(api, "pipeline/all")
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        down = _mim("down", env=env, cwd=root)
    assert down.returncode == 0, down.stderr
    assert "Prefect profile 'mine': restored PREFECT_API_URL=http://127.0.0.1:1/api" in down.stdout
    assert (home / "profiles.toml").read_text() == profile_before
