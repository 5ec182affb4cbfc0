"""`mim evaluate --method R --seed S`: k-NN and linear probe of `models/R/seed-S/encoder.safetensors` on the prepared
data, with eval.yaml's seed set to S.

`--baseline-of R --seed S` evaluates a randomly initialised encoder of recipe R's shape (name `baseline-R`, seeded
by S), `--pixels` the raw pixels (name `pixels`, eval.yaml's own seed), under the same protocol. Outputs:
`metrics/evaluate/<name>/seed-S.json` and `plots/evaluate/<name>/seed-S.json` (`pixels.json` for the pixels).
`evaluate` is also the one-off form's (`mim evaluate --encoder FILE`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mim.data import ImageTensors
from mim.data.prepared import open_prepared
from mim.engine.runtime import oom_hint
from mim.evaluation.evaluate import eval_subsets, evaluate_encoder, evaluate_pixels
from mim.io import write_text
from mim.models.encoder import Encoder
from mim.models.export import load_encoder
from mim.params import DataParams, EvalParams, load_pretrain, load_with_data
from mim.params.bind.data import augment, check_prepared
from mim.params.bind.encoders import encoder_spec, random_init_encoder
from mim.params.bind.evaluation import probe_config
from mim.project.layout import PREPARED, encoder_file, metrics_file, plots_dir, stage_name
from mim.tracking import StageRun, path_md5
from mim.tracking.timings import timed

Features = Encoder | None  # None = the raw pixels


def evaluate(features: Features, train: ImageTensors, test: ImageTensors, params: EvalParams,
             data: DataParams) -> dict[str, float]:
    """k-NN and linear probe (percent) of an encoder's features, or of the raw pixels (`features` None), on the
    seeded subsets `params` asks for."""
    train, test = eval_subsets(train, test, params.train_subset, params.test_subset, params.seed)
    with oom_hint("evaluation", f"batch_size (now {params.batch_size}) or linear.batch_size (now "
                  f"{params.linear.batch_size}) in params/eval.yaml"):
        if features is None:
            return evaluate_pixels(train, test, augment(data), probe_config(params))
        return evaluate_encoder(features, train, test, augment(data), probe_config(params))


def baseline_encoder(params_dir: str | Path, recipe: str, data: DataParams, stored_channels: int,
                     seed: int) -> Encoder:
    """A random-init encoder of `recipe`'s shape at the data's size (seeded by `seed`)."""
    model = load_pretrain(params_dir, recipe).model
    spec = encoder_spec(model, data.image_size, augment(data).out_channels(stored_channels))
    return random_init_encoder(spec, seed, "random-init")


def run(method: str | None, seed: int | None, params_dir: str | Path, overrides: list[str] | None = None,
        baseline: bool = False, pixels: bool = False) -> dict:
    """Evaluate `models/<method>/seed-<seed>/` (default), a random-init encoder of `method`'s recipe (`baseline`), or
    the raw pixels (`pixels`, `seed` None); `seed` replaces eval.yaml's. Every result has `knn_top1` and
    `linear_top1` (percent), and `linear_<p>pct_top1` per label fraction below 1 in params/eval.yaml."""
    extra = [] if seed is None else [f"seed={seed}"]
    params, data = load_with_data(params_dir, "eval", [*(overrides or []), *extra])
    name = "pixels" if pixels else f"baseline-{method}" if baseline else method
    check_prepared(data, PREPARED, Path(params_dir) / "data.yaml")
    with timed("data_s"):
        train, test = open_prepared(PREPARED, "eval_train"), open_prepared(PREPARED, "test")
    run_name = stage_name("baseline", method, seed) if baseline else stage_name("evaluate", name, seed)
    tags = {"evaluated": method or "pixels", **({"seed": str(seed)} if seed is not None else {})}
    with StageRun("evaluate", name, tags=tags, run_name=run_name) as tracker:
        tracker.log_params({"eval": params.model_dump(mode="json"), "data": data.model_dump(mode="json")})
        if pixels:
            features = None
        elif baseline:
            features = baseline_encoder(params_dir, method, data, train.channels, params.seed)
        else:
            path = encoder_file(method, seed)
            tracker.set_tags({"dvc.dep.encoder": path_md5(path)})
            features = load_encoder(str(path), img_size=data.image_size)  # FastMIM pre-trains smaller
        results = evaluate(features, train, test, params, data)
        tracker.log_metrics({f"eval/{m}": v for m, v in results.items() if m.endswith("_top1")})  # + linear_1pct_top1..
        metrics_path = metrics_file("evaluate", name, seed)
        write_text(str(metrics_path), json.dumps(results, indent=2) + "\n")
        rows = [{"features": name, "protocol": p, "top1": results[f"{p}_top1"]} for p in ("knn", "linear")]
        write_text(str(plots_dir("evaluate", name, seed).with_suffix(".json")), json.dumps(rows, indent=2) + "\n")
        tracker.log_artifact(metrics_path)
    return results
