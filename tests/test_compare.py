"""`mim compare`: the table reads every method's metrics files and marks the ones that have not run."""

import json
import shutil

import pytest
import yaml

from mim.params import ParamsError, check_dir
from mim.params.edit import edit_yaml_text
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


def test_a_recipe_input_the_pipeline_misdeclares_or_no_stage_writes_is_refused(tmp_path):
    """params/pipeline.yaml's `input` is what the flows build before a recipe: it must be the folder the recipe's
    own file trains from (DMJD's teacher target included), and a stage must write it."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    pipeline = tmp_path / "params" / "pipeline.yaml"
    pipeline.write_text(edit_yaml_text(pipeline.read_text(), {"methods.ccvit.input": "data/prepared"})[0])
    dmjd = tmp_path / "params" / "dmjd.yaml"
    dmjd.write_text(edit_yaml_text(dmjd.read_text(), {"method.target": "teacher"})[0])
    with pytest.raises(ParamsError) as err:
        check_dir(tmp_path / "params")
    lines = str(err.value).splitlines()[1:]
    assert [line.strip() for line in lines] == [
        f"{pipeline}: methods: ccvit: input is data/prepared, but {tmp_path}/params/ccvit.yaml trains from "
        "models/tokenizer: set input: models/tokenizer",
        f"{pipeline}: methods: dmjd: input is data/prepared, but {dmjd} trains from models/teacher: "
        "set input: models/teacher"]
    with pytest.raises(ValueError, match="methods: ccvit: input is data/prepared, but .* set input: models/tokenizer"):
        input_stage(tmp_path, "ccvit")
    assert input_stage(tmp_path, "mae") is None and input_stage(tmp_path, "img2vec") == "teacher"

    # the recipe and the pipeline agree on a folder no stage writes: the flow would train from nothing
    (tmp_path / "params" / "img2vec.yaml").write_text(edit_yaml_text(
        (tmp_path / "params" / "img2vec.yaml").read_text(), {"method.teacher": "models/teacher-l"})[0])
    pipeline.write_text(edit_yaml_text(pipeline.read_text(), {"methods.img2vec.input": "models/teacher-l"})[0])
    with pytest.raises(ValueError, match=r"methods: img2vec: input models/teacher-l: no stage of dvc.yaml writes it"):
        input_stage(tmp_path, "img2vec")


def test_pretraining_refuses_an_input_the_pretrain_stage_does_not_depend_on(tmp_path, monkeypatch):
    """A recipe trained from a folder dvc.yaml's pretrain stage does not list: DVC would neither build it first
    nor re-run the recipe when it changes. Refused before any data is read."""
    from mim.project.graph import undeclared_dep
    from mim.stages import pretrain as stage

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    assert not undeclared_dep(tmp_path, "pretrain", "models/tokenizer")  # a matrix stage's literal deps count
    assert undeclared_dep(tmp_path, "pretrain", "models/tokenizer-8k")
    with pytest.raises(ValueError, match=r"params/ccvit.yaml: ccvit's input models/tokenizer-8k: add it to the "
                                         r"pretrain stage's deps in dvc.yaml"):
        stage.run("ccvit", 0, "params", ["method.tokenizer=models/tokenizer-8k"])
    spec = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    spec["stages"]["pretrain"]["deps"].append("models/${item.method}-input")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert not undeclared_dep(tmp_path, "pretrain", "models/tokenizer-8k")  # interpolated deps: not second-guessed
