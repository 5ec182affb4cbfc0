"""Re-launch the current command under torchrun when the launcher params ask for several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import torch


def processes_per_node(nproc_per_node: int | Literal["auto"]) -> int:
    """`nproc_per_node`, with "auto" meaning every visible GPU (1 on a CPU-only machine)."""
    if nproc_per_node == "auto":
        return max(1, torch.cuda.device_count())
    return nproc_per_node


def needs_launch(nproc_per_node: int | Literal["auto"], nnodes: int) -> bool:
    """True when we are not yet inside torchrun and more than one process is wanted."""
    return "WORLD_SIZE" not in os.environ and (processes_per_node(nproc_per_node) > 1 or nnodes > 1)


def relaunch_with_torchrun(nproc_per_node: int | Literal["auto"], nnodes: int, argv: list[str]) -> int:
    """Run `python -m torch.distributed.run ... -m mim.cli <argv>` and return its exit code.

    Single node: a local rendezvous. Several nodes: run the same command on every node with
    MIM_RDZV_ENDPOINT=host:port (and optionally MIM_RDZV_ID) set identically.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node(nproc_per_node)}",
           f"--nnodes={nnodes}"]
    if nnodes > 1:
        endpoint = os.environ.get("MIM_RDZV_ENDPOINT")
        if not endpoint:
            raise RuntimeError(f"launcher.nnodes={nnodes} needs MIM_RDZV_ENDPOINT=host:port on every node")
        run_id = os.environ.get("MIM_RDZV_ID", "mim")
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]
    else:
        cmd += ["--standalone"]
    return subprocess.call([*cmd, "-m", "mim.cli", *argv])
