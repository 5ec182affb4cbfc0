"""`mim compare`: the table reads every method's metrics files and marks the ones that have not run."""

import json

from mim.project.compare import comparison_table
from mim.project.graph import input_stage, pipeline_methods
from tests.helpers import ROOT


def test_table_with_a_missing_method(tmp_path):
    (tmp_path / "metrics/pretrain").mkdir(parents=True)
    (tmp_path / "metrics/evaluate").mkdir(parents=True)
    (tmp_path / "metrics/pretrain/mae.json").write_text(json.dumps(
        {"steps": 10, "wall_time_s": 12.4, "images_per_s": 800.0, "final_loss": 0.7}))
    (tmp_path / "metrics/evaluate/mae.json").write_text(json.dumps({"knn_top1": 75.123, "linear_top1": 70.0}))
    (tmp_path / "metrics/evaluate/baseline-mae.json").write_text(json.dumps({"knn_top1": 65.0, "linear_top1": 66.0}))
    (tmp_path / "metrics/evaluate/pixels.json").write_text(json.dumps({"knn_top1": 82.0, "linear_top1": 83.5}))
    table = comparison_table(tmp_path, ["mae", "ccvit"]).splitlines()
    assert table[2] == "| mae | 10 | 12 | 800 | 75.12 | 70.00 |"
    assert table[3] == "| ccvit | - | - | - | not run | not run |"
    assert table[4] == "| random-init mae encoder (baseline) | - | - | - | 65.00 | 66.00 |"
    assert table[5] == "| raw pixels (baseline) | - | - | - | 82.00 | 83.50 |"


def test_methods_and_their_input_stages_come_from_dvc_yaml():
    methods = pipeline_methods(ROOT)
    assert list(methods) == ["mae", "simmim", "ccvit", "img2vec", "cim", "cim-resnet", "cim-resnet-revdet",
                             "mixmim", "dmjd", "maskfeat", "fastmim"]
    assert [input_stage(ROOT, m) for m in methods] == [None, None, "tokenizer", "teacher", *["tokenizer"] * 3,
                                                       None, None, None, None]
