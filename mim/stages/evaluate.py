"""`mim evaluate --method M`: k-NN and linear probe of `models/M/encoder.safetensors` on the prepared data.

`mim evaluate --baseline M` evaluates a randomly initialised encoder of M's shape and the raw pixels
under the same protocol. Outputs: `metrics/evaluate/<name>.json` and `plots/evaluate/<name>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mim.data.prepared import load_prepared
from mim.engine.checkpoint import write_text
from mim.evaluation.evaluate import eval_subsets, evaluate_encoder, evaluate_pixels
from mim.models.export import load_encoder
from mim.models.vit import build_vit
from mim.params import load_pretrain, load_with_data
from mim.rng import derive_seed
from mim.stages.layout import PREPARED, metrics_file, model_dir, plots_dir
from mim.tracking import StageRun, path_md5


def run(method: str, params_dir: str | Path, overrides: list[str] | None = None, baseline: bool = False) -> dict:
    params, data = load_with_data(params_dir, "eval", overrides)
    name = "baseline" if baseline else method
    train, test = eval_subsets(load_prepared(PREPARED, "train"), load_prepared(PREPARED, "test"), params)
    with StageRun("evaluate", name, tags={"evaluated": method}) as tracker:
        tracker.log_params({"eval": params.model_dump(mode="json"), "data": data.model_dump(mode="json")})
        if baseline:
            spec = load_pretrain(params_dir, method).model.spec(data.image_size, 3 if data.to_rgb else 1)
            torch.manual_seed(derive_seed(params.seed, "random-init"))
            results = {"random_init": evaluate_encoder(build_vit(spec), train, test, params, data),
                       "pixels": evaluate_pixels(train, test, params, data)}
            flat = {f"eval/{k}/{m}": v[m] for k, v in results.items() for m in ("knn_top1", "linear_top1")}
        else:
            encoder_path = model_dir(method) / "encoder.safetensors"
            tracker.set_tags({"dvc.dep.encoder": path_md5(encoder_path)})
            results = evaluate_encoder(load_encoder(str(encoder_path)), train, test, params, data)
            flat = {f"eval/{m}": results[m] for m in ("knn_top1", "linear_top1")}
        tracker.log_metrics(flat)
        metrics_path = metrics_file("evaluate", name)
        write_text(str(metrics_path), json.dumps(results, indent=2) + "\n")
        rows = [{"features": k, "protocol": p, "top1": v[f"{p}_top1"]}
                for k, v in (results.items() if baseline else [(method, results)]) for p in ("knn", "linear")]
        write_text(str(plots_dir("evaluate", name).with_suffix(".json")), json.dumps(rows, indent=2) + "\n")
        tracker.log_artifact(metrics_path)
    return results
