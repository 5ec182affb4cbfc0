"""What the training loop is told: plain, frozen settings (the params layer fills them in; no defaults here, so the
params models stay the one place defaults are written)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mim.engine.identity import RunIdentity


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW at `base_lr` x global batch / 256 (x the method's own `lr_factor`)."""

    base_lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip_grad: float | None
    fused: Literal["auto", "on", "off"]


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Linear warm-up (`warmup_steps`, else `warmup_fraction` of the run), then cosine to `min_lr_ratio` x lr."""

    warmup_fraction: float
    warmup_steps: int | None
    min_lr_ratio: float

    def warmup(self, total_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_fraction * total_steps)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One pre-training run: global batch, length (`steps`, else `epochs` over the data), precision, checkpoints,
    progress, `signature` (method, model, size: a checkpoint of another signature is another model) and `identity`
    (everything that made the run: a checkpoint of another identity is another run)."""

    batch_size: int
    accum_steps: int
    epochs: float
    steps: int | None
    seed: int
    amp: Literal["auto", "bf16", "fp16", "off"]
    compile: bool
    ckpt_every: int
    ckpt_every_s: float | None
    log_every_s: float
    log_every_steps: int | None
    picture_every: int | None  # reconstruction pictures while training (None: 4 per run; 0: none)
    on_device: Literal["auto", "always", "never"]
    num_workers: int | Literal["auto"]
    strategy: Literal["ddp", "fsdp"]
    optim: OptimConfig
    schedule: ScheduleConfig
    signature: str
    identity: RunIdentity

    def total_steps(self, num_samples: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * (num_samples // self.batch_size)))


PICTURES_PER_RUN = 4  # `picture_every` None: this many pictures, evenly spaced


def picture_steps(total_steps: int, every: int | None) -> set[int]:
    """The steps (1-based, after that many optimizer steps) a picture is drawn at: every `every` steps and at the
    end; `every` None: `PICTURES_PER_RUN` evenly spaced, the last at the end; 0: none."""
    if every == 0:
        return set()
    if every is None:
        return {max(1, round(total_steps * k / PICTURES_PER_RUN)) for k in range(1, PICTURES_PER_RUN + 1)}
    return set(range(every, total_steps + 1, every)) | {total_steps}
