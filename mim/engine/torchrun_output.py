"""torchrun's stderr, passed on without the tracebacks that repeat an error a rank already printed in one line.

torchrun (the agent) ends a failed run with its own traceback: `ChildFailedError` and a table of ranks when a rank
exited non-zero, `Rendezvous*Error` when the nodes did not meet. Its frames say nothing a user can act on: a rank's
one-line error (`mim pretrain: error: ...`) is the message; the rendezvous failure becomes the launcher's own line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TextIO

RENDEZVOUS_FAILURES = ("RendezvousTimeoutError", "RendezvousConnectionError", "RendezvousClosedError")
_CHILD_FAILED = "ChildFailedError"
_ONE_LINE = re.compile(r"^mim [\w-]+: ")  # what a rank prints for an error users cause (see mim.cli.main)
_AGENT_LOG = re.compile(r"^[IWE]\d{4} [\d:.]+ \d+ \S*torch/distributed/")  # the agent's logging lines


def _exception_name(line: str) -> str:
    return line.split(":")[0].strip().rsplit(".", 1)[-1]


def forward_torchrun_stderr(stream: Iterable[str], out: TextIO) -> str | None:
    """Copy `stream` to `out` line by line (each rank's identical one-line error once), withholding torchrun's
    rendezvous traceback (its exception line is returned) and, when a rank printed a one-line error, the agent's
    failure traceback, table and log lines; without such a line (a crash, a bug) they are passed on at the end."""
    block: list[str] = []
    withheld: list[str] = []
    state = "text"  # "frames": inside a traceback; "raised": just after its exception line; "summary": the rest
    rendezvous, one_lines = None, set()

    def write(line: str) -> None:
        if _ONE_LINE.match(line):
            if line in one_lines:
                return
            one_lines.add(line)
        out.write(line)
        out.flush()

    def end_block() -> str:
        nonlocal rendezvous
        names = [_exception_name(line) for line in block if line.strip() and not line[0].isspace()]
        found = [n for n in names if n in RENDEZVOUS_FAILURES]
        if found:
            rendezvous = found[-1]
        elif _CHILD_FAILED in names:
            withheld.extend(block)
            block.clear()
            return "summary"
        else:
            for line in block:
                write(line)
        block.clear()
        return "text"

    for line in stream:
        if state == "summary":  # the agent's table of failed ranks, after its ChildFailedError
            withheld.append(line)
            continue
        if state == "raised" and not (line.strip() == "" or line.startswith(("During handling", "The above exception",
                                                                             "Traceback"))):
            state = end_block()
            if state == "summary":
                withheld.append(line)
                continue
        if state == "text":
            if line.startswith("Traceback (most recent call last):"):
                block.append(line)
                state = "frames"
            elif _AGENT_LOG.match(line):
                withheld.append(line)
            else:
                write(line)
            continue
        block.append(line)
        if line.startswith("Traceback"):
            state = "frames"
        elif state == "frames" and line.strip() and not line[0].isspace():
            state = "raised"
    if block:
        end_block()
    if not one_lines and rendezvous is None:
        for line in withheld:
            write(line)
    return rendezvous
