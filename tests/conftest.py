"""Shared fixtures: tiny params that train in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the test server

from mim.params import PretrainParams, load_params

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


def tiny_tokenizer_dir() -> Path:
    """A 16-centroid tokenizer for 4-px RGB patches, built once per test process (CCViT's tiny params)."""
    from mim.targets import CentroidTokenizer

    folder = Path(tempfile.gettempdir()) / f"mim-test-tokenizer-{os.getpid()}"
    if not (folder / "tokenizer.json").is_file():
        patches = torch.rand(1000, 48, generator=torch.Generator().manual_seed(0))
        CentroidTokenizer.build(patches, 16, iters=5, patch_size=4, channels=3, verbose=False).save(folder)
    return folder


def tiny_overrides(method: str = "mae", **extra: object) -> list[str]:
    sets = [s for s in TINY if method == "mae" or not s.startswith("method.decoder")]
    if method == "simmim":
        sets.append("method.mask_unit_size=8")
    if method == "ccvit" and "method.tokenizer" not in extra:
        sets.append(f"method.tokenizer={tiny_tokenizer_dir()}")
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


@pytest.fixture
def tiny():
    return tiny_params


@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server and database for the whole session (started once, about 20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
