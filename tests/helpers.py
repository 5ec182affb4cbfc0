"""What tests share beyond fixtures: tiny params that train in seconds on a CPU, tokenizer and teacher folders
built once per process, a one-off pre-training run into a folder, and `mim` in a subprocess."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mim.data import ImageTensors
from mim.engine.pretrain import PictureCallback
from mim.engine.trainer import MetricsCallback, Trainer, TrainResult
from mim.methods import MIMMethod
from mim.params import PretrainParams, load_params
from mim.params.bind import methods, training
from mim.params.bind.data import augment
from mim.project.layout import PARAMS_FILE
from mim.project.runs import run_files

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data.source=synthetic:128",
    "data.image_size=16",
    "model.patch_size=4",
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "method.decoder.embed_dim=32",
    "method.decoder.depth=1",
    "method.decoder.num_heads=2",
    "train.batch_size=16",
    "train.steps=12",
    "train.log_every_steps=4",
    "optim.base_lr=2e-3",
]


def _process_dir(kind: str) -> Path:
    """A folder for this test process's shared fixtures, removed when the process exits."""
    folder = Path(tempfile.gettempdir()) / f"mim-test-{kind}-{os.getpid()}"
    if not folder.exists():
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def tiny_tokenizer_dir() -> Path:
    """A 16-centroid tokenizer for 4-px RGB patches, built once per test process (CCViT's tiny params)."""
    from mim.targets import CentroidTokenizer

    folder = _process_dir("tokenizer")
    if not (folder / "tokenizer.json").is_file():
        patches = torch.rand(1000, 48, generator=torch.Generator().manual_seed(0))
        CentroidTokenizer.build(patches, 16, iters=5, patch_size=4, channels=3, verbose=False).save(folder)
    return folder


def tiny_teacher_dir() -> Path:
    """A teacher folder (random-init EfficientNet-Lite0, 24 channels on a 4x4 grid for 16-px images and 4-px
    patches), written once per test process (Img2Vec's tiny params)."""
    import json

    from mim.targets.teacher import Teacher, TeacherSource, teacher_manifest

    folder = _process_dir("teacher")
    if not (folder / "manifest.json").is_file():
        spec = TeacherSource(kind="timm", name="efficientnet_lite0", weights="random", level=1, input_size=32,
                             token_norm=True)
        teacher, digest = Teacher.from_spec(spec, (4, 4), (0.5,) * 3, (0.5,) * 3)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps(teacher_manifest(spec, teacher, digest)))
    return folder


def tiny_overrides(method: str = "mae", **extra: object) -> list[str]:
    sets = [s for s in TINY if method in ("mae", "img2vec") or not s.startswith("method.decoder")]
    if extra.get("model.arch") == "cnn" or method == "mixmim":  # no ViT depth/heads (a CNN: no width either)
        sets = [s for s in sets if s.split("=")[0] not in ("model.embed_dim", "model.depth", "model.num_heads",
                                                            "model.patch_size")]
    if method == "mixmim":  # 16 px, patch 2 -> 8x8 -> 4x4 tokens of 4 px
        sets += ["model.arch=hier", "model.patch_size=2", "model.embed_dim=32", "model.depths=[1, 1]",
                 "model.num_heads=[2, 2]", "model.window_sizes=[4, 4]", "method.decoder.embed_dim=32",
                 "method.decoder.depth=1", "method.decoder.num_heads=2"]
    if method == "simmim":
        sets.append("method.mask_unit_size=8")
    if method in ("ccvit", "cim") and "method.tokenizer" not in extra:
        sets.append(f"method.tokenizer={tiny_tokenizer_dir()}")
    if method == "img2vec" and "method.teacher" not in extra:
        sets.append(f"method.teacher={tiny_teacher_dir()}")
    return [f"method.name={method}", *sets, *(f"{k}={v}" for k, v in extra.items())]


def tiny_params(method: str = "mae", **extra: object) -> PretrainParams:
    """Tiny validated params; keyword `train__steps=3` sets `train.steps`."""
    dotted = {k.replace("__", "."): v for k, v in extra.items()}
    return load_params(PretrainParams, None, tiny_overrides(method, **dotted))


def run_mim(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m mim.cli ...` in a subprocess (the console script's code path)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mim.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=ROOT)


def build_method(params: PretrainParams, in_chans: int = 3) -> MIMMethod:
    return methods.build_method(params, in_chans)


def pretrain(params: PretrainParams, out: str, *, data: ImageTensors | None = None, resume: str = "never",
             held_out: ImageTensors | None = None, on_metrics: MetricsCallback | None = None,
             on_picture: PictureCallback | None = None) -> TrainResult:
    """A one-off run into `out` (the layout of `mim pretrain --out`), what the CLI's one-off form runs."""
    out = str(out).rstrip("/")
    return training.pretrain_run(params, run_files(out), f"{out}/{PARAMS_FILE}", data=data, held_out=held_out,
                                 resume=resume, on_metrics=on_metrics, on_picture=on_picture)


def make_trainer(method: MIMMethod, data: ImageTensors, params: PretrainParams, out: str) -> Trainer:
    """A CPU `Trainer` for `params` writing its checkpoint under `out`, as a one-off run would."""
    return Trainer(method, data, augment(params.data, params.image_size), training.train_config(params, data.digest()),
                   run_files(str(out)).checkpoint, torch.device("cpu"))


def one_error_line(stderr: str, command: str) -> str:
    """The single `mim <command>: ...` line an expected error prints (and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith(f"mim {command}: "), stderr
    return lines[0]
