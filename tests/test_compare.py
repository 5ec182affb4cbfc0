"""`mim compare`: the table reads every method's metrics files and marks the ones that have not run."""

import json

from mim.project.compare import comparison_table
from mim.project.graph import input_stage, pipeline_methods
from tests.helpers import ROOT


def test_table_with_a_missing_method(tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "params/pipeline.yaml").write_text("methods: {mae: {}, ccvit: {input: models/tokenizer}}\n"
                                                   "baselines: [mae]\nseeds: [3]\ntransfer_seeds: [3]\n")
    for stage in ("pretrain/mae", "evaluate/mae", "evaluate/baseline-mae"):
        (tmp_path / "metrics" / stage).mkdir(parents=True)
    (tmp_path / "metrics/pretrain/mae/seed-3.json").write_text(json.dumps(
        {"steps": 10, "wall_time_s": 12.4, "images_per_s": 800.0, "final_loss": 0.7}))
    (tmp_path / "metrics/evaluate/mae/seed-3.json").write_text(json.dumps({"knn_top1": 75.123, "linear_top1": 70.0}))
    (tmp_path / "metrics/evaluate/baseline-mae/seed-3.json").write_text(json.dumps({"knn_top1": 65.0,
                                                                                   "linear_top1": 66.0}))
    (tmp_path / "metrics/evaluate/pixels.json").write_text(json.dumps({"knn_top1": 82.0, "linear_top1": 83.5}))
    (tmp_path / "metrics/evaluate/mae/seed-0.json").write_text("not read: seed 0 is not in params/pipeline.yaml")
    table = comparison_table(tmp_path, ["mae", "ccvit"]).splitlines()
    assert table[2] == "| mae | 1 | 10 | 12 | 800 | 75.12 | 70.00 |"
    assert table[3] == "| ccvit | - | - | - | - | not run | not run |"
    assert table[4] == "| random-init mae encoder (baseline) | 1 | - | - | - | 65.00 | 66.00 |"
    assert table[5] == "| raw pixels (baseline) | 1 | - | - | - | 82.00 | 83.50 |"


def test_methods_and_their_input_stages_come_from_the_pipeline_params():
    methods = pipeline_methods(ROOT)
    assert list(methods) == ["mae", "ccvit", "img2vec", "cim", "mixmim", "dmjd"]
    assert [input_stage(ROOT, m) for m in methods] == [None, "tokenizer", "teacher", "tokenizer", None, None]
