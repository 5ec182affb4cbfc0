"""Pre-training params -> the engine's settings, and one whole pre-training run (the stage's and a one-off's)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mim.data import ImageTensors
from mim.data.shards import ShardSplit
from mim.engine.config import OptimConfig, ScheduleConfig, TrainConfig
from mim.engine.distributed import init_distributed
from mim.engine.files import PretrainFiles
from mim.engine.identity import ResumePolicy, RunIdentity
from mim.engine.pretrain import PictureCallback, pretrain
from mim.engine.runtime import resolve_device, set_deterministic
from mim.engine.trainer import MetricsCallback, TrainResult
from mim.io import exists, path_md5, write_text
from mim.methods.warm_start import FIELD, InitSource, resolve_init, warm_start
from mim.params.base import run_control
from mim.params.bind.data import augment, train_images
from mim.params.bind.methods import build_method
from mim.params.models import PretrainParams
from mim.rng import derive_seed

log = logging.getLogger("mim.train")
PICTURE_COUNT = 8  # held-out images in the reconstruction grid


def run_identity(params: PretrainParams, data_digest: str, init: InitSource | None = None) -> RunIdentity:
    """What makes this run this run: its params less the run-control ones (`RUN_CONTROL` fields: a resume may
    change those), its data, its method's extra input (tokenizer, teacher folder), the contents of the weights it
    starts from (`init`, `model.init_from`) and the code."""
    extra = params.method.input_dir
    values = params.model_dump(mode="json", exclude=run_control(PretrainParams))
    if init is not None:  # a changed file at the same path is another run
        values["model"]["init_from_digest"] = init.digest
    return RunIdentity.of(values, data=data_digest, inputs=path_md5(Path(extra)) if extra else "")


def train_config(params: PretrainParams, data_digest: str, init: InitSource | None = None) -> TrainConfig:
    t, o, s = params.train, params.optim, params.schedule
    model = params.model.model_dump(exclude={"init_from"})  # the architecture: where weights start is the identity's
    signature = json.dumps({"method": params.method.model_dump(), "model": model, "image_size": params.image_size},
                           sort_keys=True)
    return TrainConfig(
        batch_size=t.batch_size, accum_steps=t.accum_steps, epochs=t.epochs, steps=t.steps, seed=t.seed, amp=t.amp,
        compile=t.compile, ckpt_every=t.ckpt_every, ckpt_every_s=t.ckpt_every_s, log_every_s=t.log_every_s,
        log_every_steps=t.log_every_steps, picture_every=t.picture_every,
        on_device=params.data.on_device, num_workers=params.data.num_workers, strategy=params.launcher.strategy,
        signature=signature, identity=run_identity(params, data_digest, init),
        optim=OptimConfig(base_lr=o.base_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                          clip_grad=o.clip_grad, fused=o.fused),
        schedule=ScheduleConfig(warmup_fraction=s.warmup_fraction, warmup_steps=s.warmup_steps,
                                min_lr_ratio=s.min_lr_ratio))

def pretrain_run(params: PretrainParams, files: PretrainFiles, params_file: str, *,
                 data: ImageTensors | ShardSplit | None = None, held_out: ImageTensors | None = None,
                 resume: ResumePolicy | None = None, on_metrics: MetricsCallback | None = None,
                 on_picture: PictureCallback | None = None) -> TrainResult:
    """One pre-training run from params, the same for the pipeline stage and a one-off run: set up the device
    (and DDP), build `params`' method and train it on `data` (default: `params.data`'s training split), writing
    `files` and the resolved params to `params_file`. The reconstruction grid shows `held_out`'s first images
    (the training data's without it); `on_picture(step, png)` gets it while training (`train.picture_every`).
    `resume` overrides `train.resume`."""
    t = params.train
    device = resolve_device(t.device)
    dist = init_distributed(device.type)
    if dist.enabled:
        device = resolve_device(t.device, dist.local_rank, "train.device")
    set_deterministic(t.deterministic)
    data = data if data is not None else train_images(params.data)
    aug = augment(params.data, params.image_size)
    torch.manual_seed(derive_seed(t.seed, "init"))  # same initial weights on every rank
    method = build_method(params, aug.out_channels(data.channels))
    init = resolve_init(params.model.init_from) if params.model.init_from else None
    policy = resume or t.resume
    if init is not None and policy != "never" and exists(files.checkpoint):
        log.info("%s: not applied, the run continues from its checkpoint %s", FIELD, files.checkpoint)
    elif init is not None:  # every rank reads the same file: the same weights everywhere
        warm_start(method, init)
    resolved = params.model_dump_json(indent=2) + "\n"
    if dist.is_main and not exists(files.checkpoint):  # else only once the checkpoint's resume check passed: a
        write_text(params_file, resolved)              # refused run must not relabel the earlier run's outputs
    shown = held_out if held_out is not None else data
    pictures = (shown.tensors(params.data.image_size, range(PICTURE_COUNT)) if isinstance(shown, ShardSplit)
                else shown).images[:PICTURE_COUNT]
    digest = data.digest()
    result = pretrain(method, data, aug, train_config(params, digest, init), files, device=device, dist=dist,
                      resume=policy, picture_images=pictures, on_metrics=on_metrics, on_picture=on_picture,
                      export_metadata={"data": params.data.model_dump_json(), "data_digest": digest},
                      model_metadata={"recipe": params.recipe().model_dump_json(),
                                      **({"init_from": init.spec, "init_from_digest": init.digest} if init else {})})
    if dist.is_main:
        write_text(params_file, resolved)
    return result
