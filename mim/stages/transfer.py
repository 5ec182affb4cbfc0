"""`mim transfer --method R --seed S`: fine-tune `models/R/seed-S/encoder.safetensors` (and, per
params/transfer.yaml, k-NN and the linear probe) on the prepared data; `mim transfer --scratch --seed S`: the same
fine-tuning recipe from a random encoder of `scratch_of`'s architecture. S replaces finetune.seed (and eval.yaml's
seed). Outputs `metrics/transfer/<name>/seed-S.json` (name = R or `scratch`) and `plots/transfer/<name>/seed-S.csv`
(the fine-tuning loss). One fine-tune per `finetune.label_fractions`; each one's checkpoint lives under
`.mim/checkpoints/` until it completes, so a killed stage resumes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from mim.data import ImageTensors
from mim.data.prepared import open_prepared
from mim.data.shards import ShardSplit
from mim.engine.identity import RunIdentity
from mim.engine.progress import history_csv
from mim.engine.runtime import oom_hint
from mim.evaluation.evaluate import eval_subsets, fraction_key, label_subsets
from mim.evaluation.finetune import finetune
from mim.evaluation.finetune_augment import FinetuneAugment
from mim.io import write_text
from mim.models.encoder import Encoder
from mim.models.export import load_encoder
from mim.params import DataParams, EvalParams, TransferParams, load_params, load_pretrain, load_with_data
from mim.params.base import run_control
from mim.params.bind.data import augment, check_prepared
from mim.params.bind.encoders import encoder_spec, random_init_encoder
from mim.project.layout import (
    PREPARED,
    checkpoint_name,
    checkpoint_url,
    encoder_file,
    metrics_file,
    model_dir,
    plots_dir,
    stage_name,
)
from mim.stages.evaluate import evaluate
from mim.tracking import StageRun, path_md5
from mim.tracking.timings import timed


def finetune_identity(params: TransferParams, data: DataParams, data_digest: str, encoder_digest: str
                      ) -> RunIdentity:
    """What makes one fine-tune this fine-tune: the transfer and data params less their run-control keys, the
    labelled images' digest and the pre-trained encoder's ("" for the scratch encoder)."""
    return RunIdentity.of({"transfer": params.model_dump(mode="json", exclude=run_control(TransferParams)),
                           "data": data.model_dump(mode="json", exclude=run_control(DataParams))},
                          data=data_digest, inputs=encoder_digest)


def finetune_fractions(encoder: Encoder, name: str, method: str | None, seed: int,
                       train_all: ImageTensors | ShardSplit, test_all: ImageTensors | ShardSplit,
                       params: TransferParams, data: DataParams, tracker: StageRun) -> dict:
    """One fine-tune of a fresh copy of `encoder` per `finetune.label_fractions` (class-balanced subsets, the same
    images for every method); metrics `finetune_top1` (all labels) or `finetune_<p>pct_top1`, and their steps and
    seconds. The full-label run's loss curve is `plots/transfer/<name>/seed-<seed>.csv` (else the largest
    fraction's)."""
    ft = params.finetune
    train, test = eval_subsets(train_all, test_all, ft.train_subset, None, ft.seed)
    parts = {f: train if idx is None else train.take(idx, f"{f:g} of the labels")
             for f, idx in sorted(label_subsets(train.labels, ft.label_fractions, ft.seed).items(), reverse=True)}
    for f, part in parts.items():
        if ft.batch_size > len(part):
            raise ValueError(f"finetune.label_fractions {f:g}: {len(part)} labelled images, fewer than "
                             f"finetune.batch_size {ft.batch_size}: lower the batch size or drop that fraction")
    recipe = FinetuneAugment(auto_augment=ft.auto_augment, reprob=ft.reprob, remode=ft.remode, recount=ft.recount,
                             eval_crop_pct=ft.eval_crop_pct)
    results: dict = {}
    for i, (f, part) in enumerate(parts.items()):
        key = fraction_key("finetune", f)
        base = checkpoint_name("transfer", name, seed)
        ckpt = checkpoint_url(base if f == 1 else f"{base}-{key}")
        tracker.follow_checkpoint(ckpt)
        identity = finetune_identity(params, data, part.digest(), path_md5(model_dir(method, seed)) if method else "")
        with oom_hint("fine-tuning", f"finetune.batch_size (now {ft.batch_size}) in params/transfer.yaml"):
            out = finetune(copy.deepcopy(encoder), part, test, augment(data), epochs=ft.epochs,
                           steps=ft.low_label_steps if f < 1 else None, batch_size=ft.batch_size, base_lr=ft.base_lr,
                           weight_decay=ft.weight_decay, drop_path=ft.drop_path,
                           layer_decay=ft.layer_decay if method else ft.scratch_layer_decay,
                           label_smoothing=ft.label_smoothing, mixup=ft.mixup, cutmix=ft.cutmix,
                           warmup_fraction=ft.warmup_fraction, pool=ft.pool, amp=ft.amp, device=ft.device,
                           seed=ft.seed, ckpt_url=ckpt, ckpt_every=ft.ckpt_every, ckpt_every_s=ft.ckpt_every_s,
                           identity=identity, resume=ft.resume, recipe=recipe)
        shutil.rmtree(Path(ckpt).parent, ignore_errors=True)  # complete: the next run starts fresh
        results.update({key: out.top1, key.replace("_top1", "_steps"): out.steps,
                        key.replace("_top1", "_wall_time_s"): out.wall_time_s})
        if i == 0:
            plots = plots_dir("transfer", name, seed).with_suffix(".csv")
            write_text(str(plots), history_csv(out.history))
            tracker.log_artifact(plots)
        tracker.log_metric_history(f"transfer/{key.replace('_top1', '_loss')}", out.history["step"],
                                   out.history["loss"])
    return results


def run(method: str | None, seed: int, params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Transfer `method`'s encoder of seed `seed`, or (`method` None) the scratch baseline seeded by `seed`."""
    params, data = load_with_data(params_dir, "transfer", [*(overrides or []), f"finetune.seed={seed}"])
    name = method or "scratch"
    check_prepared(data, PREPARED, Path(params_dir) / "data.yaml")
    with timed("data_s"):
        train_all, test_all = open_prepared(PREPARED, "eval_train"), open_prepared(PREPARED, "test")
    ft = params.finetune
    run_name = stage_name("transfer", method, seed) if method else stage_name("scratch", "scratch", seed)
    with StageRun("transfer", name, tags={"seed": str(seed)}, run_name=run_name) as tracker:
        tracker.log_params({"transfer": params.model_dump(mode="json")})
        if method is None:
            model = load_pretrain(params_dir, params.scratch_of).model
            in_chans = augment(data).out_channels(train_all.channels)
            encoder = random_init_encoder(encoder_spec(model, data.image_size, in_chans), ft.seed, "scratch-init")
            tracker.set_tags({"scratch_of": params.scratch_of})
        else:
            path = encoder_file(method, seed)
            tracker.set_tags({"dvc.dep.encoder": path_md5(path)})
            encoder = load_encoder(str(path), img_size=data.image_size)
        results: dict = {}
        if {"knn", "linear"} & set(params.protocols):
            eval_params = load_params(EvalParams, Path(params_dir) / "eval.yaml", [f"seed={seed}"])
            frozen = evaluate(encoder, train_all, test_all, eval_params, data)
            results.update({k: v for k, v in frozen.items()  # linear_top1, linear_1pct_top1, ...
                            if k.endswith("_top1") and k.split("_")[0] in params.protocols})
        if "finetune" in params.protocols:
            results.update(finetune_fractions(encoder, name, method, seed, train_all, test_all, params, data,
                                              tracker))
        metrics_path = metrics_file("transfer", name, seed)
        write_text(str(metrics_path), json.dumps(results, indent=2) + "\n")
        tracker.log_metrics({f"transfer/{k}": v for k, v in results.items() if k.endswith("_top1")})
        tracker.log_artifact(metrics_path)
    return results
