"""Seeds and intervals: the t quantile and intervals against hand-computed values, paired differences, the params
of the pipeline's shape, and the report rendered from metrics files of two seeds (no pipeline run)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from mim.analysis.stats import mean_interval, paired_difference, t_quantile, t_two_sided
from mim.cli.main import main
from mim.params import ParamsError, PipelineParams, check_dir, load_pretrain
from mim.project.compare import comparison_table
from mim.project.graph import declared_stages, pipeline, recipe_stages
from mim.project.results import baselines
from mim.stages.report import gather, render
from tests.helpers import ROOT, one_error_line

# t_{0.975, df} from the printed tables (to 3 decimals)
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(df) == pytest.approx(T_TABLE[df], abs=5e-4)
    assert t_two_sided(t_quantile(df), df) == pytest.approx(0.95, abs=1e-9)


def test_t_distribution_closed_forms():
    assert t_two_sided(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| <= 1) = 1/2
    assert t_two_sided(1.0, 2) == pytest.approx(1 / math.sqrt(3))  # t / sqrt(2 + t^2)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)  # the normal's in the limit
    assert t_quantile(4, 0.90) == pytest.approx(2.132, abs=5e-4)


def test_mean_interval_by_hand():
    e = mean_interval([1.0, 2.0, 3.0])  # mean 2, sample sd 1: half-width t_{.975,2} / sqrt(3)
    assert (e.mean, e.n) == (2.0, 3) and e.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    one = mean_interval([88.5])
    assert (one.mean, one.half_width, one.n, one.significant) == (88.5, None, 1, None)
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_paired_difference_pairs_by_seed():
    method, twin = {0: 80.0, 1: 82.0, 2: 81.1}, {0: 79.0, 1: 80.8, 2: 80.0, 3: 10.0}  # seed 3: no partner
    d = paired_difference(method, twin)  # differences 1, 1.2, 1.1: mean 1.1, sd 0.1
    assert d.n == 3 and d.mean == pytest.approx(1.1)
    assert d.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6) and d.significant
    # control: unpaired, the same numbers' spread would hide the effect; paired, seed noise cancels
    noisy = paired_difference({0: 70.0, 1: 90.0}, {0: 69.0, 1: 89.0})
    assert noisy.mean == pytest.approx(1.0) and noisy.half_width == pytest.approx(0.0, abs=1e-9)
    assert not paired_difference({0: 1.0, 1: 3.0}, {0: 2.0, 1: 2.0}).significant  # -1, +1: contains 0
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_pipeline_params_refuse_what_cannot_run(tmp_path):
    ok = PipelineParams(methods={"mae": {}}, baselines=["mae"], seeds=[0, 1, 2], transfer_seeds=[0])
    assert ok.methods["mae"].input == "data/prepared"
    for bad, message in [({"seeds": [0, 0]}, "a seed is listed twice"), ({"seeds": []}, "no seeds"),
                         ({"baselines": ["mixmim"]}, "baselines ['mixmim'] are not among methods"),
                         ({"seeds": [-1]}, "greater than or equal to 0"),
                         ({"transfer_seeds": [1]}, "transfer_seeds [1] are not among seeds [0]"),
                         ({"transfer_seeds": [0, 0]}, "transfer_seeds [0, 0]: a seed is listed twice")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            PipelineParams(**{"methods": {"mae": {}}, "baselines": ["mae"], "seeds": [0], "transfer_seeds": [], **bad})
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params, ignore=shutil.ignore_patterns("sets"))
    (params / "pipeline.yaml").write_text("methods: {mae: {}, dino: {}}\nbaselines: [mae]\ntransfer_seeds: []\n")
    with pytest.raises(ParamsError, match=re.escape(f"{params}/pipeline.yaml: methods: dino: no {params}/dino.yaml")):
        check_dir(params)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def two_seeds(tmp_path, monkeypatch) -> Path:
    """A project whose mae ran at seeds 0 and 1 (with its twins), dmjd not at all; params/ as shipped."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "params", tmp_path / "params", ignore=shutil.ignore_patterns("sets"))
    (tmp_path / "params/pipeline.yaml").write_text(
        "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0, 1]\ntransfer_seeds: [0, 1]\n")
    model = load_pretrain(ROOT / "params", "mae").model.model_dump(mode="json")  # as params.json holds it
    for seed, (knn, linear, low, ft, bknn, blinear, blow, sft) in enumerate(
            [(74.0, 70.0, 50.0, 85.5, 64.0, 69.0, 40.0, 80.0), (76.0, 71.0, 52.0, 86.5, 65.0, 72.0, 41.0, 81.0)]):
        _write(tmp_path / f"models/mae/seed-{seed}/params.json", {"model": model, "method": {"name": "mae"}})
        _write(tmp_path / f"metrics/pretrain/mae/seed-{seed}.json",
               {"wall_time_s": 88.0 + seed, "images_per_s": 1354.0})
        _write(tmp_path / f"metrics/evaluate/mae/seed-{seed}.json",
               {"knn_top1": knn, "linear_top1": linear, "linear_1pct_top1": low})  # a new protocol: a new column
        _write(tmp_path / f"metrics/transfer/mae/seed-{seed}.json", {"finetune_top1": ft})
        _write(tmp_path / f"metrics/evaluate/baseline-mae/seed-{seed}.json",
               {"knn_top1": bknn, "linear_top1": blinear, "linear_1pct_top1": blow})
        _write(tmp_path / f"metrics/transfer/scratch/seed-{seed}.json", {"finetune_top1": sft})
    return tmp_path


def test_report_shows_means_intervals_and_paired_differences_over_two_seeds(two_seeds):
    pipe = pipeline(two_seeds)
    rows = gather(two_seeds, pipe, two_seeds / "params", "mae")
    text = render(rows, baselines(two_seeds, pipe, "mae"), {"pretrain@mae-0": "abc", "pretrain@mae-1": "def"}, {},
                  pipe.seeds).splitlines()
    assert ("| method | encoder | params (M) | seeds | pre-train s | img/s | k-NN | linear | fine-tune | linear_1pct "
            "| TD | MLflow run |") in text
    # knn 74, 76: mean 75, sd sqrt(2), half-width t_{.975,1} sqrt(2) / sqrt(2) = 12.706
    assert ("| mae | ViT-micro/4 | - | 2 | 88 ± 6 | 1354 ± 0 | 75.00 ± 12.71 | 70.50 ± 6.35 | 86.00 ± 6.35 | "
            "51.00 ± 12.71 | - | abc def |") in text
    assert "| dmjd | - | - | - | not run | - | not run | not run | not run | not run | - | - |" in text
    assert ("| random-init mae encoder (baseline) | - | - | 2 | - | - | 64.50 ± 6.35 | 70.50 ± 19.06 | 80.50 ± 6.35 | "
            "40.50 ± 6.35 | - | - |") in text
    # paired: knn 10, 11 -> 10.5 ± 6.35; linear 1, -1 -> 0 ± 12.71 (n.s.); fine-tune 5.5, 5.5 against scratch
    assert ("| mae | random-init mae + scratch | +10.50 [+4.15, +16.85] | +0.00 [-12.71, +12.71] n.s. | "
            "+5.50 [+5.50, +5.50] | +10.50 [+4.15, +16.85] |") in text
    assert "| dmjd | random-init mae + scratch | - | - | - | - |" in text  # same architecture, nothing run yet


def _report(project: Path, pipeline_yaml: str | None = None) -> tuple[PipelineParams, str]:
    """The report of `project` (after writing `pipeline_yaml` over its params/pipeline.yaml, when given)."""
    if pipeline_yaml is not None:
        (project / "params/pipeline.yaml").write_text(pipeline_yaml)
    pipe = pipeline(project)
    return pipe, render(gather(project, pipe, project / "params", "mae"), baselines(project, pipe, "mae"), {}, {},
                        pipe.seeds, pipe.reference_recipe)


def test_one_seed_says_it_has_no_interval(two_seeds):
    _, text = _report(
        two_seeds, "methods: {mae: {}, mixmim: {}}\nbaselines: [mae]\nseeds: [1]\ntransfer_seeds: [1]\n")
    assert "| mae | ViT-micro/4 | - | 1 seed, no interval | 89 | 1354 | 76.00 | 71.00 | 86.50 | 52.00 |" in text
    assert "| mae | random-init mae + scratch | +11.00 (1 seed, no interval) |" in text
    assert ("| mixmim | none: add a recipe of its architecture to `baselines` in params/pipeline.yaml | - | - | - "
            "| - |\n") in text  # a hierarchical encoder is no ViT's twin
    assert "one seed: no interval" in text


def test_fine_tunes_count_only_at_transfer_seeds(two_seeds):
    # seed 1's fine-tune files are left from an earlier run: the pipeline no longer declares those stages
    _, text = _report(
        two_seeds, "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0, 1]\ntransfer_seeds: [0]\n")
    assert "| 75.00 ± 12.71 | 70.50 ± 6.35 | 85.50 (n=1) | 51.00 ± 12.71 |" in text  # 85.5: seed 0's alone
    assert ("| random-init mae encoder (baseline) | - | - | 2 | - | - | 64.50 ± 6.35 | 70.50 ± 19.06 | 80.00 (n=1) |"
            in text)
    _, text = _report(
        two_seeds, "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0, 1]\ntransfer_seeds: []\n")
    assert "| method | encoder | params (M) | seeds | pre-train s | img/s | k-NN | linear | linear_1pct | TD |" in text
    assert "| mae | random-init mae |" in text  # nothing fine-tuned: no scratch twin is named


def test_report_compares_each_method_with_the_reference_recipe_seed_by_seed(two_seeds):
    model = load_pretrain(ROOT / "params", "dmjd").model.model_dump(mode="json")
    for seed, (knn, ft) in enumerate([(77.0, 84.5), (80.0, 85.5)]):  # mae: 74, 76 and 85.5, 86.5
        _write(two_seeds / f"models/dmjd/seed-{seed}/params.json", {"model": model, "method": {"name": "dmjd"}})
        _write(two_seeds / f"metrics/evaluate/dmjd/seed-{seed}.json", {"knn_top1": knn, "linear_top1": 70.0})
        _write(two_seeds / f"metrics/transfer/dmjd/seed-{seed}.json", {"finetune_top1": ft})
    pipe, text = _report(two_seeds)
    assert pipe.reference_recipe == "mae"  # the first recipe when the file names none
    # k-NN 3, 4 -> 3.5 ± 6.35; linear 0, -1 -> -0.5 ± 6.35 n.s.; fine-tune -1, -1 -> -1 (no spread)
    assert "## Each method minus mae, paired by seed" in text
    assert ("| dmjd | +3.50 [-2.85, +9.85] n.s. | -0.50 [-6.85, +5.85] n.s. | -1.00 [-1.00, -1.00] | - |"
            in text)
    assert "| mae | +0.00" not in text  # the reference has no row of its own
    _, text = _report(two_seeds, "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0, 1]\n"
                                 "transfer_seeds: [0, 1]\nreference: dmjd\n")
    assert "## Each method minus dmjd" in text and "| mae | -3.50 [-9.85, +2.85] n.s." in text
    with pytest.raises(ValueError, match="reference 'simmim' is not among methods"):
        PipelineParams(methods={"mae": {}}, baselines=["mae"], transfer_seeds=[], reference="simmim")


def test_declared_stages_expand_the_matrix_from_the_pipeline_params(two_seeds):
    shutil.copy(ROOT / "dvc.yaml", two_seeds / "dvc.yaml")
    (two_seeds / "params/pipeline.yaml").write_text(
        "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0, 1]\ntransfer_seeds: [1]\n")
    stages = declared_stages(two_seeds)
    assert [s for s in stages if s.startswith(("pretrain@", "transfer@", "scratch@", "baseline@"))] == [
        "pretrain@mae-0", "pretrain@mae-1", "pretrain@dmjd-0", "pretrain@dmjd-1", "baseline@mae-0", "baseline@mae-1",
        "transfer@mae-1", "transfer@dmjd-1", "scratch@1"]
    assert "prepare" in stages and "report" in stages


def test_compare_and_the_flows_stage_list_follow_the_seeds(two_seeds):
    table = comparison_table(two_seeds, ["mae", "dmjd"]).splitlines()
    assert table[2] == "| mae | 2 | - | 88 ± 6 | 1354 ± 0 | 75.00 ± 12.71 | 70.50 ± 6.35 |"
    assert table[3] == "| dmjd | - | - | - | - | not run | not run |"
    assert table[4] == "| random-init mae encoder (baseline) | 2 | - | - | - | 64.50 ± 6.35 | 70.50 ± 19.06 |"
    assert recipe_stages(two_seeds, "mae") == ["pretrain@mae-0", "evaluate@mae-0", "pretrain@mae-1", "evaluate@mae-1"]


@pytest.mark.parametrize("argv, expected", [
    (["pretrain", "--method", "mae"], "stage form: give --seed S (one of params/pipeline.yaml's seeds), e.g. "
                                      "`mim pretrain --method mae --seed 0`"),
    (["evaluate", "--baseline-of", "mae"], "stage form: give --seed S (one of params/pipeline.yaml's seeds), e.g. "
                                           "`mim evaluate --baseline-of mae --seed 0`"),
    (["transfer", "--scratch", "--seed", "-1"], "--seed -1: a seed is a non-negative integer"),
    (["evaluate", "--pixels", "--seed", "1"], "--pixels takes no --seed (raw pixels have no random init: eval.yaml's "
                                              "seed is used)"),
    (["pretrain", "--out", "x", "--seed", "1"], "--seed is the stage form's (dvc.yaml); a one-off run takes --set "
                                                "train.seed=S"),
])
def test_the_stage_form_needs_its_seed(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is read or written before the refusal
    assert main(["-q", *argv]) == 2
    assert one_error_line(capsys.readouterr().err, argv[0]) == f"mim {argv[0]}: error: {expected}"
    assert not any(tmp_path.iterdir())
