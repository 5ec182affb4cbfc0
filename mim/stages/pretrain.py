"""`mim pretrain --method M --seed S`: pre-train on the prepared data with `params/M.yaml` + `params/data.yaml`, with
`train.seed` set to S (one of params/pipeline.yaml's seeds).

Outputs: `models/M/seed-S/` (encoder.safetensors; model.safetensors, the full model; params.json),
`metrics/pretrain/M/seed-S.json`, `plots/pretrain/M/seed-S/` (history.csv, parts/<loss part>.csv, loss.png,
reconstructions.png); with tracking on, the reconstruction grid every `train.picture_every` steps goes to MLflow
(docs/pictures.md), and the encoder ends as the run's MLflow model `encoder` (docs/services.md). The training
checkpoint lives under `.mim/checkpoints/` until the run completes, so a killed `dvc repro` resumes where it
stopped; the full model stays (`model.init_from` starts another run from it). The one-off form
(`mim pretrain --out DIR`) runs the same `mim.params.bind.training.pretrain_run` into another layout
(`mim.project.runs.run_files`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mim.data.prepared import load_prepared, open_prepared, read_manifest
from mim.engine.distributed import shutdown_distributed
from mim.models.export import Encoder, PooledEncoder, load_encoder
from mim.params import load_pretrain
from mim.params.bind.data import check_prepared
from mim.params.bind.training import PICTURE_COUNT, pretrain_run
from mim.project.graph import require_dep
from mim.project.layout import PARAMS_FILE, PREPARED, checkpoint_name, checkpoint_url, model_dir, stage_name
from mim.project.runs import stage_files
from mim.tracking import StageRun, path_md5
from mim.tracking.timings import timed

PICTURE_KEY = "reconstructions"  # the MLflow image key of the pictures drawn while training
ENCODER_POOL = "mean"  # the features of the MLflow model `encoder`: the shipped probes' pooling, every encoder has it


def example_images(encoder: Encoder) -> np.ndarray:
    """Two blank images at the encoder's size, MLflow's input example: two because torch.export fixes a dimension
    of size 1, and the batch must stay free."""
    return np.zeros((2, encoder.spec.in_chans, encoder.spec.img_size, encoder.spec.img_size), dtype=np.float32)


def metric_names(values: dict[str, float]) -> dict[str, float]:
    """`train/<name>` for the common and method-part names; a method's namespaced names (`cim/gen_acc`) as is."""
    return {(k if "/" in k else f"train/{k}"): v for k, v in values.items()}


def input_tags(folder: str | None) -> dict[str, str]:
    """Tags naming what a teacher folder holds (source, weights digest), so a run says what it learned from."""
    manifest = Path(folder or "") / "manifest.json"
    if folder is None or not manifest.is_file() or "weights_digest" not in (info := json.loads(manifest.read_text())):
        return {}
    return {"teacher.source": info["source"], "teacher.digest": info["weights_digest"]}


def run(method: str, seed: int, params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Pre-train recipe `method` with `train.seed` = `seed` into its per-seed layout; returns the metrics."""
    params = load_pretrain(params_dir, method, [*(overrides or []), f"train.seed={seed}"])
    extra_input = params.method.input_dir
    if extra_input:
        require_dep(Path("."), "pretrain", extra_input, f"{Path(params_dir) / method}.yaml: {method}'s input")
    check_prepared(params.data, PREPARED, Path(params_dir) / "data.yaml")
    with timed("data_s"):
        data = open_prepared(PREPARED, "train")
    ckpt = checkpoint_url(checkpoint_name("pretrain", method, seed))
    files, params_file = stage_files(method, seed, ckpt), model_dir(method, seed) / PARAMS_FILE
    main = os.environ.get("RANK", "0") == "0"
    with StageRun("pretrain", method, enabled=None if main else False, tags={"seed": str(seed)},
                  run_name=stage_name("pretrain", method, seed)) as tracker:
        tracker.log_params(params.model_dump(mode="json"))
        tracker.log_dataset(read_manifest(PREPARED)["source"], str(PREPARED), data.digest())
        tracker.set_tags({"dvc.dep.data/prepared": path_md5(PREPARED),
                          **({f"dvc.dep.{extra_input}": path_md5(Path(extra_input))} if extra_input else {}),
                          **input_tags(extra_input)})
        tracker.follow_checkpoint(ckpt)
        for f in (f"{method}.yaml", "data.yaml"):
            tracker.log_artifact(Path(params_dir) / f, "params")
        result = pretrain_run(params, files, str(params_file), data=data,
                              held_out=load_prepared(PREPARED, "test", limit=PICTURE_COUNT),
                              on_metrics=lambda step, m: tracker.log_metrics(metric_names(m), step),
                              on_picture=(lambda step, png: tracker.log_image(PICTURE_KEY, png, step))
                              if tracker.enabled else None)
        shutdown_distributed()
        if not main:
            return {}
        shutil.rmtree(Path(ckpt).parent, ignore_errors=True)  # complete: the next run starts fresh
        tracker.log_metrics({"train/final_loss": result.final_loss, "train/wall_time_s": result.wall_time_s,
                             "train/mean_img_per_s": result.images_per_s}, result.steps)
        tracker.set_tags({"dvc.out.models": path_md5(Path(files.encoder).parent),
                          **({"mim.resumed_from_step": str(result.resumed_from)} if result.resumed_from else {}),
                          **({"mim.resume_forced": "; ".join(result.resume_changes)} if result.resume_changes else {})})
        for f in (files.loss_plot, files.reconstructions, files.history, files.metrics, params_file, files.model):
            tracker.log_artifact(Path(f))
        if tracker.enabled:
            encoder = load_encoder(files.encoder)
            tracker.log_model(PooledEncoder(encoder, ENCODER_POOL).eval(), "encoder", example_images(encoder),
                              {"pool": ENCODER_POOL, "image_size": encoder.spec.img_size, "source": files.encoder})
    return json.loads(Path(files.metrics).read_text())
