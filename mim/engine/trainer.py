"""The pre-training loop: any `MIMMethod`, any in-memory dataset, one process or DDP under torchrun.

Every random draw of a step (batch indices, crops, masks, dropout) is derived from
(seed, step), so the step number is the whole data/RNG position: a run resumed from a
checkpoint replays exactly what the uninterrupted run would have done, and N processes
sharing a global batch see the same samples, crops and masks as one process would.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mim.data import BatchAugment, ImageTensors, StepBatches
from mim.data.shards import ShardSplit
from mim.data.stream import ShardSteps, step_loader, worker_count
from mim.engine.checkpoint import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from mim.engine.config import TrainConfig
from mim.engine.distributed import DistInfo, any_rank, mean_across_ranks
from mim.engine.identity import ResumePolicy, check_resume
from mim.engine.optim import build_adamw, scaled_lr
from mim.engine.progress import TrainProgress
from mim.engine.runtime import autocast, autocast_dtype
from mim.engine.schedule import build_scheduler
from mim.engine.sharding import full_state, load_full_state, set_gradient_sync, shard
from mim.methods.base import MIMMethod
from mim.rng import derive_seed, generator_for

log = logging.getLogger("mim.train")
CKPT_FORMAT = "mim-checkpoint/1"
MetricsCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    wall_time_s: float
    images_per_s: float
    history: dict[str, list[float]] = field(default_factory=dict)
    resumed_from: int | None = None
    resume_changes: list[str] = field(default_factory=list)  # what differed from the checkpoint (`force` only)


def keep_on_device(images: torch.Tensor, placement: str, device: torch.device) -> bool:
    """Whether the uint8 training array goes to the GPU: `always`; or `auto` on CUDA when it takes at most a quarter
    of the free GPU memory (the rest is for the model, activations and the allocator)."""
    if placement == "always":
        return True
    if placement == "never" or device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= free // 4


class Trainer:
    """Owns the model, optimizer, schedule and checkpoints of one pre-training run."""

    def __init__(self, method: MIMMethod, data: ImageTensors | ShardSplit, augment: BatchAugment, config: TrainConfig,
                 ckpt_url: str, device: torch.device, dist: DistInfo | None = None,
                 on_metrics: MetricsCallback | None = None, after_step: StepCallback | None = None) -> None:
        dist = dist or DistInfo()
        t = config
        if t.batch_size % (dist.world_size * t.accum_steps):
            raise ValueError(f"train.batch_size {t.batch_size} is not divisible by world size {dist.world_size} "
                             f"x accum_steps {t.accum_steps}")
        self.config, self.ckpt_url, self.device, self.dist = config, ckpt_url, device, dist
        self.on_metrics = on_metrics if dist.is_main else None
        self.after_step = after_step if dist.is_main else None  # rank 0, after each optimizer step (pictures)
        self.method = method.to(device)
        self.batches = StepBatches(len(data), t.batch_size, seed=t.seed)
        self.total_steps = t.total_steps(len(data))
        self.augment = augment
        self.amp_dtype = autocast_dtype(t.amp, device)
        self.shards = data if isinstance(data, ShardSplit) else None
        self._stream: Any = None  # the loader's iterator while `fit` runs
        if self.shards is None:
            self.images = data.images.to(device) if keep_on_device(data.images, t.on_device, device) else data.images
            with autocast(device, self.amp_dtype):  # per-image targets in the precision training computes them
                self.method.prepare_data(self.images, self.augment, device)
        self.fsdp = dist.enabled and t.strategy == "fsdp"
        self.template = shard(self.method) if self.fsdp else None  # the unsharded copy export and pictures use
        o = t.optim
        self.lr = scaled_lr(o.base_lr, t.batch_size) * self.method.lr_factor
        self.optimizer = build_adamw(self.method, self.lr, o.weight_decay, o.betas, o.eps, o.fused,
                                     overrides=self.method.optimizer_overrides())
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, t.schedule.warmup(self.total_steps),
                                         t.schedule.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        model: torch.nn.Module = self.method
        if dist.enabled and not self.fsdp:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = torch.compile(model) if t.compile else model
        self.step = 0
        self.log_sums: dict[str, torch.Tensor] = {}  # method logs summed since the last recorded step
        self.history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
        self.last_ckpt_step: int | None = None
        self.elapsed_before = 0.0  # training seconds of the earlier parts of a resumed run
        self.began = self.last_ckpt_time = time.perf_counter()
        self.resume_changes: list[str] = []

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs; with FSDP a collective (the shards are gathered): call it on every rank."""
        model, optimizer = (full_state(self.method, self.optimizer) if self.fsdp
                            else (self.method.state_dict(), self.optimizer.state_dict()))
        return {
            "format": CKPT_FORMAT,
            "method": self.method.name,
            "signature": self.config.signature,
            "strategy": "fsdp" if self.fsdp else "ddp",
            "step": self.step,
            "model": model,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": self.history,
            "identity": self.config.identity.to_state(),
            "elapsed_s": self.elapsed_s(),
        }

    def elapsed_s(self) -> float:
        """Training seconds so far, the parts before a resume included."""
        return self.elapsed_before + time.perf_counter() - self.began

    def save(self) -> None:
        state = self.state() if self.fsdp or self.dist.is_main else None
        if self.dist.is_main:
            save_checkpoint(state, self.ckpt_url)
            del state
        self.last_ckpt_step = self.step
        self.last_ckpt_time = time.perf_counter()

    def resume(self, policy: ResumePolicy = "auto", url: str | None = None) -> bool:
        """Restore everything from the last checkpoint; False when there is none yet. A checkpoint made by another
        run (params, data, inputs or code: `TrainConfig.identity`) is refused unless `policy` is `force`."""
        url = url or self.ckpt_url
        if policy == "never" or not checkpoint_exists(url):
            return False
        ckpt = load_checkpoint(url, map_location=self.device)
        if ckpt.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{url}: not a mim pre-training checkpoint (format {ckpt.get('format')!r})")
        if ckpt["signature"] != self.config.signature:
            raise CheckpointError(
                f"{url}: written by another model or method ({ckpt['method']}: {ckpt['signature']}); "
                f"this run is {self.method.name}: {self.config.signature}. "
                "Use another output directory, or drop --resume to start over.")
        strategy = "fsdp" if self.fsdp else "ddp"
        if ckpt.get("strategy", "ddp") != strategy:
            raise CheckpointError(f"{url}: written with launcher.strategy {ckpt.get('strategy', 'ddp')}, this run uses "
                                  f"{strategy}; resume with the strategy that wrote it")
        self.resume_changes = check_resume(url, ckpt.get("identity"), self.config.identity, policy, "train.resume")
        if self.resume_changes:
            log.warning("train.resume=force: continuing %s although it was made by a different run: %s", url,
                        "; ".join(self.resume_changes))
        if self.fsdp:
            load_full_state(self.method, self.optimizer, ckpt["model"], ckpt["optimizer"])
        else:
            load_state_strict(self.method, ckpt["model"], url)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"].cpu())
        self.step, self.history = int(ckpt["step"]), ckpt["history"]
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        self.last_ckpt_step = self.step
        return True

    # -- one optimizer step --------------------------------------------------------------------
    def batch_for_step(self, step: int) -> list[dict[str, Any]]:
        """This rank's micro-batches of `step`: crops and masks are drawn for the global batch, then sliced."""
        t = self.config
        gen = generator_for(t.seed, "step", step)
        idx = self.batches.indices(step)
        crops = self.augment.sample(len(idx), gen)
        masks = self.method.sample_masks(len(idx), gen) if self.shards is None else None  # shards: the workers'
        share = len(idx) // self.dist.world_size
        micro = share // t.accum_steps
        out = []
        for a in range(t.accum_steps):
            lo = self.dist.rank * share + a * micro
            if self.shards is not None:  # cropped from the full images by the loader's workers
                item = next(self._stream) if self._stream is not None else self._shard_steps(step).micro_batch(step, a)
                if item["step"] != step:
                    raise RuntimeError(f"the shard loader is at step {item['step']}, training at step {step}")
                images = self.augment.normalize_uint8(item["images"].to(self.device, non_blocking=True))
                mask = item["mask"]
            else:
                raw = self.images[idx[lo : lo + micro].to(self.images.device)].to(self.device, non_blocking=True)
                images = self.augment(raw, crops.slice(lo, lo + micro))
                mask = masks.slice(lo, lo + micro)
            out.append({"images": images, "mask": mask.to(self.device),
                        "indices": idx[lo : lo + micro], "flip": crops.flip[lo : lo + micro]})
        return out

    def _shard_steps(self, start: int) -> ShardSteps:
        return ShardSteps(self.shards, self.batches, self.augment, seed=self.config.seed, rank=self.dist.rank,
                          world_size=self.dist.world_size, accum_steps=self.config.accum_steps, start=start,
                          stop=self.total_steps, sample_masks=self.method.sample_masks)

    def train_step(self, step: int) -> torch.Tensor:
        t = self.config
        torch.manual_seed(derive_seed(t.seed, "torch", step, self.dist.rank))  # dropout / drop-path
        micro_batches = self.batch_for_step(step)
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            if self.fsdp:
                set_gradient_sync(self.method, last)
            with contextlib.nullcontext() if last or not self.dist.enabled or self.fsdp else self.model.no_sync():
                with autocast(self.device, self.amp_dtype):
                    out = self.model(batch)
                loss = out["loss"].float() / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += loss.detach()
            for name, value in out.get("logs", {}).items():  # method-specific parts, averaged like the loss
                part = value.detach().float() / len(micro_batches)
                self.log_sums[name] = self.log_sums[name] + part if name in self.log_sums else part
        if self.config.optim.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        t = self.config
        start = self.step
        resumed = start if start > 0 else None
        progress = TrainProgress(self.total_steps, t.batch_size, start, t.log_every_s, t.log_every_steps,
                            enabled=self.dist.is_main)
        record_every = max(1, self.total_steps // 200)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        window = torch.zeros((), device=self.device)
        window_n = 0
        self.began = self.last_ckpt_time = last_record = time.perf_counter()
        last_record_step = start
        self.method.train()
        if self.shards is not None:
            workers = worker_count(t.num_workers, self.dist.world_size)
            self._stream = iter(step_loader(self._shard_steps(start), workers, pin_memory=self.device.type == "cuda"))
            log.info("streaming shards: %d DataLoader workers on this rank", workers)
        for step in range(start, self.total_steps):
            loss = self.train_step(step)
            bad_now = ~torch.isfinite(loss)
            first_bad = torch.where((first_bad < 0) & bad_now, torch.full_like(first_bad, step), first_bad)
            window += loss
            window_n += 1
            self.step = step + 1
            recording = self.step % record_every == 0 or self.step == self.total_steps
            ckpt_due = self.step % t.ckpt_every == 0 or self.step == self.total_steps or (
                recording and self._time_for_checkpoint())
            line_due = progress.due(step)
            if self.dist.enabled and t.log_every_steps is None:
                # the ranks' clocks differ and the means below are collectives: rank 0 decides, at a recording step
                line_due = recording and any_rank(self.dist.is_main and line_due, self.device)
            if recording or ckpt_due or line_due:
                self._check_finite(first_bad)
                mean_loss = float(mean_across_ranks(window / window_n))
                parts = {k: float(mean_across_ranks(v / window_n)) for k, v in sorted(self.log_sums.items())}
                lr = self.scheduler.get_last_lr()[0]
                if recording:
                    self.history["step"].append(self.step)
                    self.history["loss"].append(mean_loss)
                    self.history["lr"].append(lr)
                    for name, value in parts.items():  # the method's own parts (loss terms, accuracies)
                        self.history.setdefault(name, []).append(value)
                    if self.on_metrics is not None:
                        now = time.perf_counter()
                        speed = (self.step - last_record_step) * t.batch_size / max(now - last_record, 1e-9)
                        last_record, last_record_step = now, self.step
                        self.on_metrics(self.step, {"loss": mean_loss, "lr": lr, "img_per_s": speed, **parts})
                if line_due:
                    progress.report(step, mean_loss, lr, extra=parts)
                window.zero_()
                window_n = 0
                self.log_sums = {}
            if ckpt_due:
                self.save()
            if self.after_step is not None:
                self.after_step(self.step)
        self._stream = None
        wall = self.elapsed_s()  # the whole training, the parts before a resume included
        return TrainResult(
            steps=self.total_steps,
            final_loss=self.history["loss"][-1] if self.history["loss"] else float("nan"),
            wall_time_s=wall,
            images_per_s=self.total_steps * t.batch_size / max(wall, 1e-9),
            history=self.history,
            resumed_from=resumed,
            resume_changes=self.resume_changes,
        )

    def _time_for_checkpoint(self) -> bool:
        """`ckpt_every_s` seconds since the last checkpoint, on rank 0's clock (every rank must agree: an FSDP
        checkpoint is a collective)."""
        every = self.config.ckpt_every_s
        if every is None:
            return False
        return any_rank(self.dist.is_main and time.perf_counter() - self.last_ckpt_time >= every, self.device)

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad = int(first_bad)
        if bad >= 0:
            kept = (f"the last good checkpoint {self.ckpt_url} (step {self.last_ckpt_step}) is kept"
                    if self.last_ckpt_step else "no checkpoint had been written yet")
            raise NonFiniteLossError(f"loss is not finite at step {bad + 1} (1-based) of {self.total_steps}; "
                                     f"training stopped and {kept}. Lower optim.base_lr or set optim.clip_grad.")
