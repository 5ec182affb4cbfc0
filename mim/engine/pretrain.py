"""`pretrain(method, data, ...)`: train a built method (resumable), export its encoder and the full model, write
the run's files.

Every file goes where `PretrainFiles` says: the caller (a pipeline stage or a one-off run) owns the layout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import torch

from mim.analysis import plot_loss_curve
from mim.analysis.plots import save_png
from mim.analysis.reconstruct import reconstruction_png
from mim.data import BatchAugment, ImageTensors
from mim.engine.config import TrainConfig, picture_steps
from mim.engine.distributed import DistInfo
from mim.engine.files import PretrainFiles
from mim.engine.identity import ResumePolicy
from mim.engine.progress import history_csv, history_parts
from mim.engine.runtime import oom_hint
from mim.engine.sharding import full_state
from mim.engine.trainer import MetricsCallback, StepCallback, Trainer, TrainResult
from mim.io import write_text
from mim.methods import MIMMethod
from mim.methods.weights import save_model
from mim.models.export import export_encoder

log = logging.getLogger("mim.train")
PictureCallback = Callable[[int, bytes], None]  # (step, PNG bytes of the reconstruction grid)


def picture_png(method: MIMMethod, images: torch.Tensor, augment: BatchAugment, seed: int, device: torch.device,
                step: int | None = None) -> bytes:
    """The reconstruction grid of `images` (uint8) under the picture mask of `seed` (`mim.analysis.reconstruct`):
    eval mode, no gradients, the caller's RNG untouched, the train/eval mode restored."""
    title = f"{method.name} at step {step}" if step is not None else method.name
    return reconstruction_png(method, augment.eval(images.to(device)), seed, augment.mean, augment.std, title=title)


def save_pictures(method: MIMMethod, images: torch.Tensor, augment: BatchAugment, files: PretrainFiles,
                  result: TrainResult, seed: int, device: torch.device) -> None:
    """The loss curve and reconstructions of `images` (uint8) under a mask fixed by `seed`."""
    plot_loss_curve(result.history, files.loss_plot, title=f"{method.name} pre-training loss")
    save_png(picture_png(method, images, augment, seed, device, result.steps), files.reconstructions)


def picture_hook(method: MIMMethod, images: torch.Tensor, augment: BatchAugment, config: TrainConfig,
                 total_steps: int, device: torch.device, on_picture: PictureCallback) -> StepCallback:
    """The trainer's after-step callback that passes `on_picture(step, png)` the reconstruction grid at
    `config.picture_every`'s steps."""
    steps = picture_steps(total_steps, config.picture_every)

    def after_step(step: int) -> None:
        if step in steps:
            on_picture(step, picture_png(method, images, augment, config.seed, device, step))

    return after_step


def pretrain(method: MIMMethod, data: ImageTensors, augment: BatchAugment, config: TrainConfig, files: PretrainFiles,
             *, device: torch.device, dist: DistInfo, resume: ResumePolicy, picture_images: torch.Tensor,
             export_metadata: dict[str, str], on_metrics: MetricsCallback | None,
             model_metadata: dict[str, str] | None = None, on_picture: PictureCallback | None = None) -> TrainResult:
    """Train `method` on `data` and, on rank 0, export its encoder and the full model and write the run's files.
    With `resume` `auto` continue from `files.checkpoint` when it exists and was made by the same run
    (`config.identity`), with `force` whatever made it; with `never` start at step 0.

    `picture_images` (uint8, the same held-out images for every method) are shown in the reconstruction grid;
    `export_metadata` goes into the encoder file beside the architecture, and into the full model file with
    `model_metadata` (the resolved recipe); `on_metrics(step, {"loss", "lr", "img_per_s", ...})` is called on rank 0
    at every recorded step, `on_picture(step, png)` on rank 0 with the reconstruction grid of `picture_images` at
    `config.picture_every`'s steps (not with FSDP: the model is sharded).
    """
    total = config.total_steps(len(data))
    hook = None
    if on_picture is not None and dist.is_main:
        if dist.enabled and config.strategy == "fsdp":
            log.info("train.picture_every: no pictures while training with FSDP (the model is sharded); the final "
                     "reconstruction grid is drawn")
        else:
            hook = picture_hook(method, picture_images, augment, config, total, device, on_picture)
    trainer = Trainer(method, data, augment, config, files.checkpoint, device, dist, on_metrics=on_metrics,
                      after_step=hook)
    if dist.is_main:
        log.info("%s: %d encoder params, %d images, %d steps of %d, lr %.2e, device %s%s", method.name,
                 sum(p.numel() for p in method.encoder.parameters()), len(data), trainer.total_steps,
                 config.batch_size, trainer.lr, device, f", {dist.world_size} processes" if dist.enabled else "")
    if resume != "never":
        if trainer.resume(resume):
            log.info("resumed from %s at step %d", trainer.ckpt_url, trainer.step)
        else:
            log.info("no checkpoint at %s yet: starting from step 0", trainer.ckpt_url)
    with oom_hint("pre-training", f"train.batch_size (now {config.batch_size}) or raise train.accum_steps (now "
                  f"{config.accum_steps}), which keeps the batch and its lr"):
        result = trainer.fit()
    if trainer.fsdp:  # gather the shards (every rank), then export and draw from the unsharded copy on rank 0
        whole, _ = full_state(method, trainer.optimizer)
        method = trainer.template
        if dist.is_main:
            method.load_state_dict(whole)
            method.to(device)
    if dist.is_main:
        export_encoder(method.encoder, files.encoder,
                       extra={"method": method.name, "steps": str(result.steps), **export_metadata})
        save_model(method, files.model, {"steps": str(result.steps), **export_metadata, **(model_metadata or {})})
        write_text(files.history, history_csv(result.history))
        for name, text in history_parts(result.history).items():
            write_text(f"{files.parts}/{name}.csv", text)
        metrics = {"steps": result.steps, "final_loss": result.final_loss, "wall_time_s": result.wall_time_s,
                   "images_per_s": result.images_per_s, "resumed_from": result.resumed_from,
                   "resume_changes": result.resume_changes}
        write_text(files.metrics, json.dumps(metrics, indent=2) + "\n")
        save_pictures(method, picture_images, augment, files, result, config.seed, device)
    return result
