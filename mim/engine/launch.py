"""Re-launch the current command under torchrun when the launcher params ask for several processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from typing import Literal, TextIO

import torch


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
# the last line of torchrun's own traceback when the rendezvous failed (its frames say nothing a user can act on)
_RENDEZVOUS_FAILURES = ("RendezvousTimeoutError", "RendezvousConnectionError", "RendezvousClosedError")


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
    one line instead of torchrun's traceback.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node(nproc_per_node)}",
           f"--nnodes={nnodes}"]
    if nnodes == 1:
        return subprocess.call([*cmd, "--standalone", "-m", "mim.cli", *argv])
    endpoint = rendezvous_endpoint(nnodes)
    run_id = os.environ.get("MIM_RDZV_ID", "mim")
    cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
            f"--rdzv-conf=join_timeout={rdzv_timeout_s}"]
    proc = subprocess.Popen([*cmd, "-m", "mim.cli", *argv], stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        failure = _forward_stderr(proc.stderr, sys.stderr)
        code = proc.wait()
    except KeyboardInterrupt:  # torchrun got the same Ctrl-C and stops its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code and failure:
        if "Timeout" in failure:
            raise LaunchError(f"not all {nnodes} nodes (launcher.nnodes) joined the rendezvous at {endpoint} "
                              f"({ENDPOINT_VAR}) within {rdzv_timeout_s} s (launcher.rdzv_timeout_s): start the same "
                              f"command on every node, or check {ENDPOINT_VAR} and launcher.nnodes")
        raise LaunchError(f"could not reach the rendezvous at {endpoint} ({ENDPOINT_VAR}): check that node 0 runs "
                          f"the same command and that the host and port are reachable from here")
    return code


def _forward_stderr(stream: Iterable[str], out: TextIO) -> str | None:
    """Copy torchrun's stderr (its workers' included) to `out` line by line, except a traceback (with its chained
    causes) that ends in a rendezvous failure: that one is withheld and its exception line returned."""
    block: list[str] = []
    state = "text"  # "frames": inside a traceback; "raised": just after its exception line
    failure = None

    def flush() -> None:
        nonlocal failure
        raised = [line for line in block if line.split(":")[0].rsplit(".", 1)[-1].strip() in _RENDEZVOUS_FAILURES]
        if raised:
            failure = raised[-1].strip()
        else:
            out.writelines(block)
            out.flush()
        block.clear()

    for line in stream:
        if state == "raised" and not (line.strip() == "" or line.startswith(("During handling", "The above exception",
                                                                             "Traceback"))):
            flush()
            state = "text"
        if state == "text":
            if line.startswith("Traceback (most recent call last):"):
                block.append(line)
                state = "frames"
            else:
                out.write(line)
                out.flush()
            continue
        block.append(line)
        if line.startswith("Traceback"):
            state = "frames"
        elif state == "frames" and line.strip() and not line[0].isspace():
            state = "raised"
    if block:
        flush()
    return failure
