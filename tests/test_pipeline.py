"""End to end: the `pretrain` flow on a real Prefect server (test harness), real DVC stages and cache in a
throw-away project, real MLflow sqlite store. Checks lineage, DVC's skipping and what an lr edit re-runs."""

from __future__ import annotations

import json

import pytest
import torch

from tests.pipeline_project import git, make_project, set_pipeline

pytestmark = pytest.mark.slow
TRAIN_METRICS = {"train/loss", "train/lr", "train/img_per_s"}
EVAL_METRICS = {"eval/knn_top1", "eval/linear_top1"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    monkeypatch.setenv("MIM_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MIM_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.delenv("MIM_PARENT_RUN_ID", raising=False)
    return root


def _children(client, parent_id: str) -> dict[str, object]:
    runs = client.search_runs(experiment_ids=[client.get_experiment_by_name("mim").experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def _parent(client, flow_name: str):
    exp = client.get_experiment_by_name("mim")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mim.flow` = '{flow_name}'",
                              order_by=["attributes.start_time DESC"])
    return runs[0]


# the recipes run here, one seed: one per kind of input (none, the tokenizer, the teacher). The others take the
# same stage commands and code paths (each is tested at unit level, e.g. CIM's metric names in test_cim.py, and
# runs in `make demo` or the bench-cpu set): left out to keep the suite's time (each recipe adds 3 stages, ~35 s)
RECIPES = ("mae", "ccvit", "img2vec")


def test_pretrain_flow_end_to_end(prefect_harness, project):
    import mlflow
    import mlflow.pytorch

    from flows.pretrain import pretrain_flow
    from mim.models.export import load_encoder

    set_pipeline(project, RECIPES, ("mae",))
    first = pretrain_flow(method="mae")
    # every pre-training depends on every recipe input (dvc.yaml cannot look one up per matrix item): both first
    assert first["ran"][0] == "prepare" and sorted(first["ran"][1:3]) == ["teacher", "tokenizer"]
    assert first["ran"][3:] == ["pretrain@mae-0", "evaluate@mae-0"]

    client = mlflow.MlflowClient()
    parent = _parent(client, "pretrain/mae")
    assert parent.info.status == "FINISHED"
    children = _children(client, parent.info.run_id)
    assert set(children) == {"prepare", "tokenizer", "teacher", "pretrain@mae-0", "evaluate@mae-0"}
    head = git(project, "rev-parse", "HEAD").strip()
    for run in children.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["git_commit"] == head
    train_run, eval_run = children["pretrain@mae-0"], children["evaluate@mae-0"]
    assert train_run.data.tags["stage"] == "pretrain" and train_run.data.tags["method"] == "mae"
    assert train_run.data.tags["seed"] == "0" and train_run.data.params["train.seed"] == "0"
    assert TRAIN_METRICS | {"train/loss_pixel"} <= set(train_run.data.metrics)  # + the method's own parts
    losses = client.get_metric_history(train_run.info.run_id, "train/loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert train_run.data.params["optim.base_lr"] == "0.0005" and train_run.data.params["data.image_size"] == "16"
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    digests = {d.dataset.digest for d in train_run.inputs.dataset_inputs}
    assert manifest["splits"]["train"]["digest"] in digests
    scores = json.loads((project / "metrics/evaluate/mae/seed-0.json").read_text())
    assert eval_run.data.metrics["eval/knn_top1"] == pytest.approx(scores["knn_top1"])
    assert parent.data.metrics["eval/linear_top1"] == pytest.approx(scores["linear_top1"])
    artifacts = {a.path for a in client.list_artifacts(train_run.info.run_id)}
    assert {"loss.png", "reconstructions.png", "history.csv", "params"} <= artifacts
    # the encoder as an MLflow model: the pre-trained weights' mean-pooled features, at any batch size
    logged = mlflow.pytorch.load_model(f"runs:/{train_run.info.run_id}/encoder")
    encoder = load_encoder(str(project / "models/mae/seed-0/encoder.safetensors"))
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logged(images), encoder.pooled(images, "mean"), atol=1e-5)

    again = pretrain_flow(method="mae")
    assert again["ran"] == [] and again["changed"] == []
    assert _children(client, _parent(client, "pretrain/mae").info.run_id) == {}

    # A flow parameter is an edit of params/mae.yaml (comments kept): only mae's own stages re-run.
    changed = pretrain_flow(method="mae", base_lr=1e-3)
    assert changed["changed"] == ["mae.optim.base_lr"]
    assert changed["ran"] == ["pretrain@mae-0", "evaluate@mae-0"]
    text = (project / "params/mae.yaml").read_text()
    assert "base_lr: 0.001" in text and "# lr = base_lr * batch_size / 256" in text
    rerun = _children(client, _parent(client, "pretrain/mae").info.run_id)
    assert rerun["pretrain@mae-0"].data.params["optim.base_lr"] == "0.001"

    # CCViT: prepare and its tokenizer (built with mae's stages) are cached; the tokenizer's run nested under mae's
    # parent run; its evaluation carries the same metric names.
    ccvit = pretrain_flow(method="ccvit")
    assert ccvit["ran"] == ["pretrain@ccvit-0", "evaluate@ccvit-0"]
    cc = _children(client, _parent(client, "pretrain/ccvit").info.run_id)
    assert set(cc) == {"pretrain@ccvit-0", "evaluate@ccvit-0"}
    assert {k for k in cc["evaluate@ccvit-0"].data.metrics} == set(eval_run.data.metrics) >= EVAL_METRICS
    tokenizer_metrics = set(children["tokenizer"].data.metrics)
    assert {"tokenizer/build_s", "tokenizer/inertia", "tokenizer/heldout_perplexity"} <= tokenizer_metrics
    assert TRAIN_METRICS | {"train/loss_token", "train/token_acc"} <= set(cc["pretrain@ccvit-0"].data.metrics)
    assert "centroids.png" in {a.path for a in client.list_artifacts(children["tokenizer"].info.run_id)}

    # Img2Vec: the student's run names the teacher it learned from.
    img2vec = pretrain_flow(method="img2vec")
    assert img2vec["ran"] == ["pretrain@img2vec-0", "evaluate@img2vec-0"]
    iv = _children(client, _parent(client, "pretrain/img2vec").info.run_id)
    teacher_tags = {k: children["teacher"].data.tags[k] for k in ("teacher.source", "teacher.digest")}
    assert teacher_tags["teacher.source"] == "timm:efficientnet_lite0 weights=package"
    assert {k: iv["pretrain@img2vec-0"].data.tags[k] for k in teacher_tags} == teacher_tags
    assert children["teacher"].data.metrics["teacher/feature_dim"] == 40
    assert TRAIN_METRICS | {"train/loss_feature", "train/feature_cos"} <= set(iv["pretrain@img2vec-0"].data.metrics)

    # The whole graph: the baselines, transfer and the diversity analysis are left.
    from flows.pipeline import pipeline_flow

    everything = pipeline_flow()
    assert everything["methods"] == list(RECIPES)
    assert sorted(everything["ran"][:2]) == ["baseline@mae-0", "pixels"]
    rest = everything["ran"][2:]  # the rest of the graph, in DVC's order: analysis, transfer, the report last
    assert sorted(rest) == sorted(["diversity", "scratch@0", "report",
                                   *(f"transfer@{m}-0" for m in everything["methods"])])
    assert rest[-1] == "report"
    report = (project / "reports/comparison.md").read_text()
    assert all(f"| {m} " in report for m in everything["methods"]) and "not run" not in report
    assert "| random-init mae encoder (baseline) |" in report and "| raw pixels (baseline) |" in report
    assert "| ccvit | random-init mae + scratch |" in report
    assert "## Each method minus mae, paired by seed" in report and "| ccvit | " in report.split("minus mae")[1]
    assert "(1 seed, no interval)" in report  # one seed: the differences say they have no interval
    report_run = _children(client, _parent(client, "pipeline/all").info.run_id)["report"]
    shown = {a.path for a in client.list_artifacts(report_run.info.run_id, "report")}
    assert {"report/comparison.md", "report/accuracy.png", "report/accuracy_vs_time.png",
            "report/features.png"} <= shown
    diversity = json.loads((project / "metrics/diversity.json").read_text())
    assert set(diversity) == {"lite0-imagenet", "lite0-random", "mae-encoder", "img2vec-encoder"}
    assert len(diversity["lite0-imagenet"]["per_level"]) == 5 and len(diversity["mae-encoder"]["per_level"]) == 2
    div_run = _children(client, _parent(client, "pipeline/all").info.run_id)["diversity"]
    assert div_run.data.metrics["diversity/lite0-random"] == pytest.approx(diversity["lite0-random"]["token_diversity"])
    assert "token_diversity.png" in {a.path for a in client.list_artifacts(div_run.info.run_id)}
    table = (project / ".mim/comparison.md").read_text()
    assert all(f"| {m} | 1 | 4 |" in table for m in everything["methods"])
    assert "| random-init mae encoder (baseline) |" in table
    assert "| raw pixels (baseline) |" in table


def test_flow_rejects_bad_params_before_any_stage(prefect_harness, project):
    from flows.pretrain import pretrain_flow
    from mim.params import ParamsError

    before = (project / "params/mae.yaml").read_text()
    with pytest.raises(ParamsError, match=r"params/mae.yaml: train.batch_size: Input should be greater than 0"):
        pretrain_flow(method="mae", batch_size=0)
    assert (project / "params/mae.yaml").read_text() == before
    assert not (project / "data/prepared").exists()


def test_one_deployment_per_recipe_and_the_pipeline(monkeypatch):
    from flows.serve import deployments
    from mim.project.graph import pipeline_methods
    from tests.helpers import ROOT

    monkeypatch.setenv("MIM_PROJECT_DIR", str(ROOT))
    names = {f"{d.flow_name}/{d.name}" for d in deployments()}
    recipes = set(pipeline_methods(ROOT))
    assert names == {*(f"pretrain/{m}" for m in recipes), "pipeline/all"}
    assert {"mae", "ccvit", "img2vec", "cim", "mixmim", "dmjd"} <= recipes  # the seed methods, MAE the reference
    mae = next(d for d in deployments() if d.name == "mae")
    assert mae.parameters == {"method": "mae"}


def test_deployments_on_a_work_pool_run_on_its_worker(prefect_harness, project):
    """`python -m flows.deploy --pool P` registers the deployments on a process pool; a worker started with
    `prefect worker start --pool P` (as on a GPU node) picks the flow run and runs the stages in the project."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import deploy_all

    names = deploy_all("mim-test-pool", project)
    assert "pretrain/mae" in names and "pipeline/all" in names
    run = run_deployment("pretrain/mae", parameters={"evaluate": False}, timeout=0)  # scheduled, not run here
    assert run.state.is_scheduled()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    worker = subprocess.run([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool",
                             "mim-test-pool", "--run-once"], env=env, cwd="/", capture_output=True, text=True,
                            timeout=600)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.is_completed(), (state, worker.stdout[-3000:], worker.stderr[-3000:])
    assert (project / "models/mae/seed-0/encoder.safetensors").is_file()  # the worker ran the stage in the project
