"""`mim evaluate --method R`: k-NN and linear probe of `models/R/encoder.safetensors` on the prepared data.

`--baseline-of R` evaluates a randomly initialised encoder of recipe R's shape (name `baseline-R`), `--pixels`
the raw pixels (name `pixels`), under the same protocol. Outputs: `metrics/evaluate/<name>.json` and
`plots/evaluate/<name>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mim.data.prepared import load_prepared
from mim.engine.checkpoint import write_text
from mim.evaluation.evaluate import eval_subsets, evaluate_encoder, evaluate_pixels
from mim.models.export import build_encoder, load_encoder
from mim.params import load_pretrain, load_with_data
from mim.rng import derive_seed
from mim.stages.layout import PREPARED, metrics_file, model_dir, plots_dir
from mim.tracking import StageRun, path_md5


def run(method: str | None, params_dir: str | Path, overrides: list[str] | None = None, baseline: bool = False,
        pixels: bool = False) -> dict:
    """Evaluate `models/<method>/` (default), a random-init encoder of `method`'s recipe (`baseline`), or the raw
    pixels (`pixels`); every result has `knn_top1` and `linear_top1` (percent)."""
    params, data = load_with_data(params_dir, "eval", overrides)
    name = "pixels" if pixels else f"baseline-{method}" if baseline else method
    train, test = eval_subsets(load_prepared(PREPARED, "train"), load_prepared(PREPARED, "test"), params)
    with StageRun("evaluate", name, tags={"evaluated": method or "pixels"}) as tracker:
        tracker.log_params({"eval": params.model_dump(mode="json"), "data": data.model_dump(mode="json")})
        if pixels:
            results = evaluate_pixels(train, test, params, data)
        elif baseline:
            spec = load_pretrain(params_dir, method).model.spec(data.image_size, 3 if data.to_rgb else 1)
            torch.manual_seed(derive_seed(params.seed, "random-init"))
            results = evaluate_encoder(build_encoder(spec), train, test, params, data)
        else:
            encoder_path = model_dir(method) / "encoder.safetensors"
            tracker.set_tags({"dvc.dep.encoder": path_md5(encoder_path)})
            encoder = load_encoder(str(encoder_path), img_size=data.image_size)  # FastMIM pre-trains smaller
            results = evaluate_encoder(encoder, train, test, params, data)
        tracker.log_metrics({f"eval/{m}": results[m] for m in ("knn_top1", "linear_top1")})
        metrics_path = metrics_file("evaluate", name)
        write_text(str(metrics_path), json.dumps(results, indent=2) + "\n")
        rows = [{"features": name, "protocol": p, "top1": results[f"{p}_top1"]} for p in ("knn", "linear")]
        write_text(str(plots_dir("evaluate", name).with_suffix(".json")), json.dumps(rows, indent=2) + "\n")
        tracker.log_artifact(metrics_path)
    return results
