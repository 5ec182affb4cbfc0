"""`pretrain(method, data, ...)`: train a built method (resumable), export its encoder and the full model, write
the run's files.

Every file goes where `PretrainFiles` says: the caller (a pipeline stage or a one-off run) owns the layout.
"""

from __future__ import annotations

import json
import logging

import torch

from mim.analysis import plot_loss_curve, save_reconstruction_grid
from mim.data import BatchAugment, ImageTensors
from mim.engine.config import TrainConfig
from mim.engine.distributed import DistInfo
from mim.engine.files import PretrainFiles
from mim.engine.identity import ResumePolicy
from mim.engine.progress import history_csv
from mim.engine.runtime import oom_hint
from mim.engine.sharding import full_state
from mim.engine.trainer import MetricsCallback, Trainer, TrainResult
from mim.io import write_text
from mim.methods import MIMMethod
from mim.methods.weights import save_model
from mim.models.export import export_encoder
from mim.rng import generator_for

log = logging.getLogger("mim.train")


@torch.no_grad()
def save_pictures(method: MIMMethod, images: torch.Tensor, augment: BatchAugment, files: PretrainFiles,
                  result: TrainResult, seed: int, device: torch.device) -> None:
    """The loss curve and reconstructions of `images` (uint8) under a mask fixed by `seed`."""
    plot_loss_curve(result.history, files.loss_plot, title=f"{method.name} pre-training loss")
    x = augment.eval(images.to(device))
    mask = method.sample_masks(len(x), generator_for(seed, "pictures")).to(device)
    method.eval()
    panels = method.reconstruct({"images": x, "mask": mask})
    save_reconstruction_grid(x, panels, files.reconstructions, augment.mean, augment.std)


def pretrain(method: MIMMethod, data: ImageTensors, augment: BatchAugment, config: TrainConfig, files: PretrainFiles,
             *, device: torch.device, dist: DistInfo, resume: ResumePolicy, picture_images: torch.Tensor,
             export_metadata: dict[str, str], on_metrics: MetricsCallback | None,
             model_metadata: dict[str, str] | None = None) -> TrainResult:
    """Train `method` on `data` and, on rank 0, export its encoder and the full model and write the run's files.
    With `resume` `auto` continue from `files.checkpoint` when it exists and was made by the same run
    (`config.identity`), with `force` whatever made it; with `never` start at step 0.

    `picture_images` (uint8, the same held-out images for every method) are shown in the reconstruction grid;
    `export_metadata` goes into the encoder file beside the architecture, and into the full model file with
    `model_metadata` (the resolved recipe); `on_metrics(step, {"loss", "lr",
    "img_per_s", ...})` is called on rank 0 at every recorded step.
    """
    trainer = Trainer(method, data, augment, config, files.checkpoint, device, dist, on_metrics=on_metrics)
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
        metrics = {"steps": result.steps, "final_loss": result.final_loss, "wall_time_s": result.wall_time_s,
                   "images_per_s": result.images_per_s, "resumed_from": result.resumed_from,
                   "resume_changes": result.resume_changes}
        write_text(files.metrics, json.dumps(metrics, indent=2) + "\n")
        save_pictures(method, picture_images, augment, files, result, config.seed, device)
    return result
