"""`pretrain(params, out_dir)`: load data, build the method, train (resumable), export the encoder.

Outputs under `out_dir` (any fsspec URL):
    params.json                resolved parameters
    checkpoints/last.pt        full training state, written atomically every `train.ckpt_every` steps
    encoder.safetensors        the encoder, loadable by timm (architecture in the file's metadata)
    history.csv                step, loss, lr
    train_metrics.json         steps, final loss, wall time, img/s
    loss.png, reconstructions.png
"""

from __future__ import annotations

import json
import logging

import torch

from mim.analysis import plot_loss_curve, save_reconstruction_grid
from mim.data import ImageTensors, load_dataset
from mim.engine.checkpoint import write_text
from mim.engine.distributed import init_distributed
from mim.engine.progress import history_csv
from mim.engine.runtime import resolve_device, set_deterministic
from mim.engine.trainer import MetricsCallback, Trainer, TrainResult
from mim.methods import MIMMethod, build_method
from mim.models.export import export_encoder
from mim.params import PretrainParams
from mim.rng import derive_seed, generator_for

log = logging.getLogger("mim.train")


def load_train_data(params: PretrainParams) -> ImageTensors:
    """The training split named by `params.data`, optionally a seeded subset."""
    d = params.data
    data = load_dataset(d.source, d.train_split, size=d.image_size, strict=d.strict, seed=d.seed)
    if d.subset is not None:
        data = data.subset(d.subset, generator_for(d.seed, "subset"))
    return data


@torch.no_grad()
def save_pictures(method: MIMMethod, data: ImageTensors, params: PretrainParams, out_dir: str, result: TrainResult,
                  device: torch.device, count: int = 8) -> None:
    """loss.png and reconstructions.png (the first `count` images of `data`, a mask fixed by the seed)."""
    plot_loss_curve(result.history, f"{out_dir}/loss.png", title=f"{params.method.name} pre-training loss")
    d = params.data
    images = d.batch_augment(params.image_size).eval(data.images[:count].to(device))
    mask = method.sample_masks(len(images), generator_for(params.train.seed, "pictures")).to(device)
    method.eval()
    panels = method.reconstruct({"images": images, "mask": mask})
    save_reconstruction_grid(images, panels, f"{out_dir}/reconstructions.png", d.mean, d.std)


def pretrain(params: PretrainParams, out_dir: str, resume: bool = False, data: ImageTensors | None = None,
             ckpt_url: str | None = None, on_metrics: MetricsCallback | None = None,
             held_out: ImageTensors | None = None) -> TrainResult:
    """Train `params.method` and export its encoder; with `resume`, continue from the last checkpoint.

    The reconstruction pictures show `held_out`'s first images (the training data's without it), so every
    method drawn from the same held-out set shows the same images.

    `ckpt_url` moves the checkpoint out of `out_dir` (a pipeline stage keeps it where re-runs find it);
    `on_metrics(step, {"loss", "lr", "img_per_s"})` is called on rank 0 at every recorded step.
    """
    t = params.train
    device = resolve_device(t.device)
    dist = init_distributed(device.type)
    if dist.enabled:
        device = resolve_device(t.device, dist.local_rank)
    set_deterministic(t.deterministic)
    data = data if data is not None else load_train_data(params)
    in_chans = 3 if params.data.to_rgb else data.images.shape[1]
    torch.manual_seed(derive_seed(t.seed, "init"))  # same initial weights on every rank
    method = build_method(params, in_chans)
    trainer = Trainer(method, data, params, out_dir, device, dist, ckpt_url=ckpt_url, on_metrics=on_metrics)
    if dist.is_main:
        write_text(f"{trainer.out_dir}/params.json", params.model_dump_json(indent=2) + "\n")
        log.info("%s: %s encoder, %d params, %d images, %d steps of %d, lr %.2e, device %s%s",
                 params.method.name, getattr(params.model, "size", None) or params.model.name,
                 sum(p.numel() for p in method.encoder.parameters()),
                 len(data), trainer.total_steps, t.batch_size, trainer.lr, device,
                 f", {dist.world_size} processes" if dist.enabled else "")
    if resume:
        if trainer.resume():
            log.info("resumed from %s at step %d", trainer.ckpt_url, trainer.step)
        else:
            log.info("no checkpoint at %s yet: starting from step 0", trainer.ckpt_url)
    result = trainer.fit()
    if dist.is_main:
        export_encoder(method.encoder, f"{trainer.out_dir}/encoder.safetensors",
                       extra={"method": params.method.name, "steps": str(result.steps),
                              "data": params.data.model_dump_json(),
                              "data_digest": data.digest()})
        write_text(f"{trainer.out_dir}/history.csv", history_csv(result.history))
        metrics = {"steps": result.steps, "final_loss": result.final_loss, "wall_time_s": result.wall_time_s,
                   "images_per_s": result.images_per_s, "resumed_from": result.resumed_from}
        write_text(f"{trainer.out_dir}/train_metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_pictures(method, held_out if held_out is not None else data, params, trainer.out_dir, result, device)
    return result
