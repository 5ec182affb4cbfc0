"""End-to-end fine-tuning of any exported encoder (ViT, hierarchical, CNN) for classification, and the same recipe
from scratch as the baseline: mean-pooled tokens (or the class token) + LayerNorm + linear head, layer-wise lr
decay, drop path, label smoothing, timm's mixup/cutmix, RandAugment and random erasing, the eval center crop, warmup +
cosine, bf16 autocast on GPU, DDP under torchrun, and atomic checkpoints a killed run resumes from (every step's
randomness derives from (seed, step)).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import Block
from torch import nn

from mim.data import BatchAugment, ImageTensors
from mim.engine.checkpoint import checkpoint_exists, load_checkpoint, load_state_strict, save_checkpoint
from mim.engine.distributed import init_distributed, mean_across_ranks
from mim.engine.identity import ResumePolicy, RunIdentity, check_resume
from mim.engine.optim import scaled_lr
from mim.engine.runtime import autocast, autocast_dtype, resolve_device
from mim.engine.schedule import build_scheduler
from mim.evaluation.finetune_augment import FinetuneAugment, StepAugment
from mim.evaluation.layer_decay import layer_decay_groups
from mim.progress import Progress
from mim.rng import derive_seed, generator_for

log = logging.getLogger("mim")


class FinetuneNonFiniteLossError(RuntimeError):
    """The fine-tuning loss became NaN/inf; the message names the step and the lr to lower."""


class Classifier(nn.Module):
    """encoder -> pooled feature [B, D] -> LayerNorm -> Linear (head initialised small, as MAE does)."""

    def __init__(self, encoder: nn.Module, num_classes: int, pool: Literal["cls", "mean"] = "mean") -> None:
        super().__init__()
        self.encoder, self.pool = encoder, pool
        dim = encoder.embed_dim
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder.pooled(x, self.pool)))


def set_drop_path(encoder: nn.Module, rate: float) -> int:
    """Stochastic depth rising linearly to `rate` over the encoder's transformer blocks; returns how many blocks
    got it (CNN encoders keep timm's own setting, 0 here)."""
    blocks = [m for m in encoder.modules() if isinstance(m, Block)]
    for i, block in enumerate(blocks):
        p = rate * i / max(1, len(blocks) - 1)
        block.drop_path1 = DropPath(p) if p > 0 else nn.Identity()
        block.drop_path2 = DropPath(p) if p > 0 else nn.Identity()
    return len(blocks)


@dataclass
class FinetuneResult:
    top1: float  # percent on the test images
    steps: int
    wall_time_s: float
    images_per_s: float
    history: dict[str, list[float]] = field(default_factory=dict)


@torch.no_grad()
def classify_top1(model: nn.Module, test: ImageTensors, augment: BatchAugment, device: torch.device,
                  batch_size: int = 512, crop_pct: float | None = None) -> float:
    """Top-1 accuracy (percent) on whole, resized images, or on their central `crop_pct` (timm's eval crop)."""
    model.eval()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    correct = 0
    for start in range(0, len(test), batch_size):
        x = augment.eval(test.images[start:start + batch_size].to(device), crop_pct)
        with autocast(device, dtype):
            correct += int((model(x).argmax(-1).cpu() == test.labels[start:start + batch_size]).sum())
    return 100 * correct / len(test)


def finetune(encoder: nn.Module, train: ImageTensors, test: ImageTensors, augment: BatchAugment, *,
             epochs: float = 1.0, batch_size: int = 128, base_lr: float = 1e-3, weight_decay: float = 0.05,
             layer_decay: float = 0.75, drop_path: float = 0.1, label_smoothing: float = 0.1, mixup: float = 0.0,
             cutmix: float = 0.0, warmup_fraction: float = 0.1, pool: Literal["cls", "mean"] = "mean",
             betas: tuple[float, float] = (0.9, 0.999), amp: str = "auto", device: str = "auto", seed: int = 0,
             ckpt_url: str | None = None, ckpt_every: int = 200, ckpt_every_s: float | None = None,
             identity: RunIdentity | None = None, resume: ResumePolicy = "auto", steps: int | None = None,
             recipe: FinetuneAugment | None = None) -> FinetuneResult:
    """Fine-tune `encoder` with a new head on labelled `train`, report top-1 on `test`, for `epochs` over `train` or
    (when given) `steps` optimizer steps, with `recipe`'s RandAugment, random erasing and eval crop. With `ckpt_url`,
    checkpoint every `ckpt_every` steps or `ckpt_every_s` seconds, and continue a checkpoint there per `resume`
    (`identity` says what makes this run; a checkpoint made by another is refused unless `resume` is force)."""
    if (train.labels < 0).any() or (test.labels < 0).any():
        raise ValueError("fine-tuning needs class labels on both splits (class sub-folders)")
    dev = resolve_device(device, param="finetune.device")
    dist = init_distributed(dev.type)
    if dist.enabled:
        dev = resolve_device(device, dist.local_rank, "finetune.device")
    if batch_size % dist.world_size:
        raise ValueError(f"finetune.batch_size {batch_size} is not divisible by {dist.world_size} processes")
    if batch_size > len(train):
        raise ValueError(f"finetune.batch_size {batch_size} is larger than the {len(train)} training images "
                         "(finetune.train_subset or the data): lower finetune.batch_size")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    torch.manual_seed(derive_seed(seed, "head"))
    set_drop_path(encoder, drop_path)
    model = Classifier(encoder, num_classes, pool).to(dev)
    lr = scaled_lr(base_lr, batch_size)
    groups = layer_decay_groups(model, "encoder", lr, weight_decay, layer_decay)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr,
                                  betas=betas, fused=dev.type == "cuda" or None)
    steps = steps or max(1, math.ceil(epochs * len(train) / batch_size))
    recipe = recipe or FinetuneAugment()
    extra = StepAugment(recipe, augment.out_size, augment.mean, seed)
    scheduler = build_scheduler(optimizer, steps, int(warmup_fraction * steps))
    mixer = None
    if mixup > 0 or cutmix > 0:
        from timm.data import Mixup

        mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                      num_classes=num_classes)
    trained = model if not dist.enabled else nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None)
    start, history, elapsed_before = 0, {"step": [], "loss": [], "lr": []}, 0.0
    if ckpt_url and resume != "never" and checkpoint_exists(ckpt_url):
        ckpt = load_checkpoint(ckpt_url)
        if identity is not None and (changes := check_resume(ckpt_url, ckpt.get("identity"), identity, resume,
                                                              "finetune.resume")):
            log.warning("finetune.resume=force: continuing %s although it was made by a different run: %s",
                        ckpt_url, "; ".join(changes))
        load_state_strict(model, ckpt["model"], ckpt_url)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, history = int(ckpt["step"]), ckpt["history"]
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        log.info("fine-tuning resumed from %s at step %d", ckpt_url, start)
    dtype = autocast_dtype(amp, dev)
    progress = Progress(steps, "fine-tune", "steps", logger="mim.finetune", initial=start, enabled=dist.is_main)
    share = batch_size // dist.world_size
    record_every = max(1, steps // 100)
    began = last_ckpt = time.perf_counter()
    model.train()
    for step in range(start, steps):
        torch.manual_seed(derive_seed(seed, "ft-step", step, dist.rank))  # drop path, mixup
        epoch, offset = divmod(step * batch_size, len(train))
        order = torch.randperm(len(train), generator=generator_for(seed, "ft-order", epoch))
        idx = order.roll(-offset)[:batch_size][dist.rank * share:(dist.rank + 1) * share]
        crops = augment.sample(batch_size, generator_for(seed, "ft-crops", step)).slice(
            dist.rank * share, (dist.rank + 1) * share)
        if extra.on_pixels:  # RandAugment: crop to pixels on the CPU, augment each image, then normalize
            pixels = extra.pixels(augment.crop_uint8(train.images[idx], crops), step, dist.rank)
            x = augment.normalize_uint8(pixels.to(dev, non_blocking=True))
        else:
            x = augment(train.images[idx].to(dev, non_blocking=True), crops.to(dev))
        x = extra.normalized(x, step, dist.rank)
        y = train.labels[idx].to(dev)
        with autocast(dev, dtype):
            if mixer is not None:
                x, soft = mixer(x, y)
                loss = torch.sum(-soft * F.log_softmax(trained(x).float(), dim=-1), dim=-1).mean()
            else:
                loss = F.cross_entropy(trained(x).float(), y, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise FinetuneNonFiniteLossError(f"fine-tuning loss is {loss.item()} at step {step + 1}: lower "
                                             f"finetune.base_lr (now {base_lr:g})")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        # rank 0's own loss, read only when a line is drawn (no collective: ranks need not agree on when)
        progress.update(info=lambda step=step, loss=loss: {
            "epoch": f"{(step + 1) * batch_size / len(train):.2f}/{steps * batch_size / len(train):.2f}",
            "loss": loss.item(),
            "lr": f"{scheduler.get_last_lr()[-1]:.2e}"})
        recording = (step + 1) % record_every == 0 or step + 1 == steps
        if recording:
            value = float(mean_across_ranks(loss.detach()))
            for k, v in (("step", step + 1), ("loss", value), ("lr", scheduler.get_last_lr()[-1])):
                history[k].append(v)
        due = (step + 1) % ckpt_every == 0 or (ckpt_every_s is not None and recording
                                                and time.perf_counter() - last_ckpt >= ckpt_every_s)
        if ckpt_url and dist.is_main and due and step + 1 < steps:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step + 1, "history": history,
                             "elapsed_s": elapsed_before + time.perf_counter() - began,
                             **({"identity": identity.to_state()} if identity is not None else {})}, ckpt_url)
            last_ckpt = time.perf_counter()
    wall = elapsed_before + time.perf_counter() - began  # the whole fine-tuning, the parts before a resume included
    top1 = classify_top1(model, test, augment, dev, crop_pct=recipe.eval_crop_pct)
    progress.close(top1=f"{top1:.2f}%")
    return FinetuneResult(top1=top1, steps=steps, wall_time_s=wall, images_per_s=steps * batch_size / max(wall, 1e-9),
                          history=history)
