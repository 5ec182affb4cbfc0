"""Re-launch the current command under torchrun when the launcher params ask for several processes."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from mim.params import LauncherParams


def processes_per_node(launcher: LauncherParams) -> int:
    """`nproc_per_node`, with "auto" meaning every visible GPU (1 on a CPU-only machine)."""
    if launcher.nproc_per_node == "auto":
        return max(1, torch.cuda.device_count())
    return launcher.nproc_per_node


def needs_launch(launcher: LauncherParams) -> bool:
    """True when we are not yet inside torchrun and more than one process is wanted."""
    return "WORLD_SIZE" not in os.environ and (processes_per_node(launcher) > 1 or launcher.nnodes > 1)


def relaunch_with_torchrun(launcher: LauncherParams, argv: list[str]) -> int:
    """Run `python -m torch.distributed.run ... -m mim.cli <argv>` and return its exit code.

    Single node: a local rendezvous. Several nodes: run the same command on every node with
    MIM_RDZV_ENDPOINT=host:port (and optionally MIM_RDZV_ID) set identically.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node(launcher)}",
           f"--nnodes={launcher.nnodes}"]
    if launcher.nnodes > 1:
        endpoint = os.environ.get("MIM_RDZV_ENDPOINT")
        if not endpoint:
            raise RuntimeError(f"launcher.nnodes={launcher.nnodes} needs MIM_RDZV_ENDPOINT=host:port on every node")
        run_id = os.environ.get("MIM_RDZV_ID", "mim")
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]
    else:
        cmd += ["--standalone"]
    return subprocess.call([*cmd, "-m", "mim.cli", *argv])
