"""Re-launch the current command under torchrun when the launcher params ask for several processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Literal

import torch

from mim.engine.torchrun_output import forward_torchrun_stderr


def processes_per_node(nproc_per_node: int | Literal["auto"]) -> int:
    """`nproc_per_node`, with "auto" meaning every visible GPU (1 on a CPU-only machine)."""
    if nproc_per_node == "auto":
        return max(1, torch.cuda.device_count())
    return nproc_per_node


def needs_launch(nproc_per_node: int | Literal["auto"], nnodes: int) -> bool:
    """True when we are not yet inside torchrun and more than one process is wanted."""
    return "WORLD_SIZE" not in os.environ and (processes_per_node(nproc_per_node) > 1 or nnodes > 1)


class LaunchError(RuntimeError):
    """A multi-node launch could not start: no rendezvous endpoint, an unknown host, or no peer joined in time."""


ENDPOINT_VAR = "MIM_RDZV_ENDPOINT"


def rendezvous_endpoint(nnodes: int) -> str:
    """`MIM_RDZV_ENDPOINT` (host:port) checked before torchrun waits on it: set, well formed, its host known."""
    endpoint = os.environ.get(ENDPOINT_VAR, "")
    if not endpoint:
        raise LaunchError(f"launcher.nnodes={nnodes} needs {ENDPOINT_VAR}=host:port (node 0's address) set "
                          f"identically on every node, or launcher.nnodes=1")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"{ENDPOINT_VAR}={endpoint!r} is not host:port (e.g. node0.example:29400)")
    try:
        socket.getaddrinfo(host.strip("[]"), int(port))
    except OSError as err:
        raise LaunchError(f"{ENDPOINT_VAR}={endpoint}: cannot resolve host {host!r} ({err.strerror or err}): "
                          f"set it to node 0's address") from None
    return endpoint


def relaunch_with_torchrun(nproc_per_node: int | Literal["auto"], nnodes: int, argv: list[str],
                           rdzv_timeout_s: int = 600) -> int:
    """Run `python -m torch.distributed.run ... -m mim.cli <argv>` and return its exit code.

    Single node: a local rendezvous. Several nodes: run the same command on every node with
    MIM_RDZV_ENDPOINT=host:port (and optionally MIM_RDZV_ID) set identically; when the nodes have not all joined
    within `rdzv_timeout_s` (launcher.rdzv_timeout_s), or the endpoint cannot be reached, `LaunchError` says so in
    one line instead of torchrun's traceback. torchrun's own traceback after a rank's one-line error is withheld
    (`forward_torchrun_stderr`).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node(nproc_per_node)}",
           f"--nnodes={nnodes}"]
    endpoint = ""
    if nnodes == 1:
        cmd += ["--standalone"]
    else:
        endpoint = rendezvous_endpoint(nnodes)
        run_id = os.environ.get("MIM_RDZV_ID", "mim")
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
                f"--rdzv-conf=join_timeout={rdzv_timeout_s}"]
    proc = subprocess.Popen([*cmd, "-m", "mim.cli", *argv], stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        rendezvous = forward_torchrun_stderr(proc.stderr, sys.stderr)
        code = proc.wait()
    except KeyboardInterrupt:  # torchrun got the same Ctrl-C and stops its workers; this process says so once
        proc.stderr.close()  # nobody reads it any more: a write there fails instead of blocking
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code and rendezvous:
        if "Timeout" in rendezvous:
            raise LaunchError(f"not all {nnodes} nodes (launcher.nnodes) joined the rendezvous at {endpoint} "
                              f"({ENDPOINT_VAR}) within {rdzv_timeout_s} s (launcher.rdzv_timeout_s): start the same "
                              f"command on every node, or check {ENDPOINT_VAR} and launcher.nnodes")
        raise LaunchError(f"could not reach the rendezvous at {endpoint} ({ENDPOINT_VAR}): check that node 0 runs "
                          f"the same command and that the host and port are reachable from here")
    return code
