"""Teacher-feature cache benchmark: Img2Vec on whole (uncropped) images for a few epochs, with the teacher run
on every batch against its features computed once per image (`method.teacher_cache`). Same recipe, data,
steps and seed; the cached run's time includes building the cache."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from mim.data import ImageTensors
from mim.engine.trainer import TrainResult
from mim.params import PretrainParams, load_pretrain
from mim.params.bind.data import train_images
from mim.params.bind.training import pretrain_run
from mim.project.layout import PARAMS_FILE
from mim.project.runs import run_files


def _train(params: PretrainParams, out: str, data: ImageTensors) -> TrainResult:
    return pretrain_run(params, run_files(out), f"{out}/{PARAMS_FILE}", data=data, resume="never")


def _with(params: PretrainParams, **method: Any) -> PretrainParams:
    return params.model_copy(update={"method": params.method.model_copy(update=method)})


def bench_teacher_cache(params_dir: str = "params", *, epochs: float = 3.0, subset: int = 10000,
                        overrides: list[str] | None = None) -> dict[str, Any]:
    """Wall-clock and final loss of params/img2vec.yaml over `subset` images for `epochs`, teacher every step
    vs cached."""
    whole_epochs = ["data.augment.scale=[1.0, 1.0]", f"data.subset={subset}", f"train.epochs={epochs}",
                    "train.steps=null"]
    params = load_pretrain(params_dir, "img2vec", [*(overrides or []), *whole_epochs])
    data = train_images(params.data)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: allocations, thread pools
        _train(_with(params, teacher_cache="never").model_copy(
            update={"train": params.train.model_copy(update={"steps": 2})}), tmp, data)
    rows = {}
    for label, mode in (("teacher every step", "never"), ("cached teacher features", "always")):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            result = _train(_with(params, teacher_cache=mode), tmp, data)
            rows[label] = {"steps": result.steps, "total_s": time.perf_counter() - began,
                           "train_s": result.wall_time_s, "images_per_s": result.images_per_s,
                           "final_loss": result.final_loss}
    return {"epochs": epochs, "images": len(data), "rows": rows}


def format_cache_bench(result: dict[str, Any]) -> str:
    lines = [f"Img2Vec, {result['images']} whole images x {result['epochs']:g} epochs (the cached run's time "
             "includes building the cache)",
             f"{'variant':<26} {'steps':>6} {'total s':>8} {'train s':>8} {'img/s':>7} {'final loss':>10}"]
    for label, r in result["rows"].items():
        lines.append(f"{label:<26} {r['steps']:>6} {r['total_s']:>8.1f} {r['train_s']:>8.1f} "
                     f"{r['images_per_s']:>7.0f} {r['final_loss']:>10.4f}")
    (_, slow), (_, fast) = result["rows"].items()
    lines.append(f"speed-up (total wall-clock): {slow['total_s'] / fast['total_s']:.2f}x")
    return "\n".join(lines)
