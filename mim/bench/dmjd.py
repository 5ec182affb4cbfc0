"""DMJD benchmark: disjoint multi-view masking against its single-view counterpart (the same recipe with
`views: 1`: same target, decoder and visible branch) at equal wall-clock. Each variant is timed on a few
steps, then trained for the number of steps that fits the budget, and its encoder's k-NN accuracy is measured
on the same evaluation subset: the result is accuracy reached per minute of pre-training.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from mim.data import ImageTensors
from mim.engine.trainer import TrainResult
from mim.evaluation.evaluate import eval_subsets, evaluate_encoder
from mim.models.export import load_encoder
from mim.params import EvalParams, PretrainParams, load_pretrain
from mim.params.bind.data import augment, load_split
from mim.params.bind.evaluation import probe_config
from mim.params.bind.training import pretrain_run
from mim.project.layout import PARAMS_FILE
from mim.project.runs import run_files


def _train(params: PretrainParams, out: str, data: ImageTensors) -> TrainResult:
    return pretrain_run(params, run_files(out), f"{out}/{PARAMS_FILE}", data=data, resume="never")


def _seconds_per_step(params: PretrainParams, data: Any, probe_steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        short = params.model_copy(update={"train": params.train.model_copy(update={"steps": 2})})
        _train(short, tmp, data)  # warm-up (allocations, thread pools)
    with tempfile.TemporaryDirectory() as tmp:
        probe = params.model_copy(update={"train": params.train.model_copy(update={"steps": probe_steps})})
        return _train(probe, tmp, data).wall_time_s / probe_steps


def bench_dmjd(params_dir: str = "params", *, seconds: float = 120.0, probe_steps: int = 5,
               eval_train: int = 10000, eval_test: int = 2000, overrides: list[str] | None = None) -> dict[str, Any]:
    """k-NN top-1 after `seconds` of pre-training for params/dmjd.yaml and the same recipe with one view."""
    multi = load_pretrain(params_dir, "dmjd", overrides)
    single = multi.model_copy(update={"method": multi.method.model_copy(update={"views": 1})})
    d = multi.data
    data = load_split(d, "train")
    eval_params = EvalParams(train_subset=eval_train, test_subset=eval_test, linear={"epochs": 1})
    train, test = eval_subsets(load_split(d, "eval_train"), load_split(d, "test"), eval_train, eval_test,
                               eval_params.seed)
    rows = {}
    for label, params in ((f"dmjd ({multi.method.views} disjoint views)", multi), ("single view", single)):
        per_step = _seconds_per_step(params, data, probe_steps)
        steps = max(1, int(seconds / per_step))
        run = params.model_copy(update={"train": params.train.model_copy(update={"steps": steps})})
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            result = _train(run, tmp, data)
            wall = time.perf_counter() - began
            scores = evaluate_encoder(load_encoder(run_files(tmp).encoder), train, test, augment(d),
                                      probe_config(eval_params))
        images = steps * params.train.batch_size
        rows[label] = {"steps": steps, "images": images, "train_s": result.wall_time_s, "wall_s": wall,
                       "knn_top1": scores["knn_top1"], "knn_per_min": scores["knn_top1"] / (result.wall_time_s / 60)}
    return {"budget_s": seconds, "eval_train": len(train), "eval_test": len(test), "rows": rows}


def format_dmjd_bench(result: dict[str, Any]) -> str:
    lines = [f"DMJD vs single view, {result['budget_s']:.0f} s of pre-training each; k-NN on "
             f"{result['eval_train']} / {result['eval_test']} images",
             f"{'variant':<28} {'steps':>6} {'images':>8} {'train s':>8} {'k-NN %':>7}"]
    for label, r in result["rows"].items():
        lines.append(f"{label:<28} {r['steps']:>6} {r['images']:>8} {r['train_s']:>8.1f} {r['knn_top1']:>7.2f}")
    (a, ra), (b, rb) = result["rows"].items()
    lines.append(f"k-NN difference at equal wall-clock: {ra['knn_top1'] - rb['knn_top1']:+.2f} points ({a} - {b})")
    return "\n".join(lines)
