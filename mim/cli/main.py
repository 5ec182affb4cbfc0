"""`mim <command>`: the parser, logging set-up, and one line (not a traceback) for errors users cause."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version

from mim.cli import bench, reconstruct, services, stages
from mim.cli.common import UsageError
from mim.params import ParamsError


def mim_version() -> str:
    try:
        return version("mim")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mim", description="Masked image modeling pre-training.")
    parser.add_argument("--version", action="version", version=f"mim {mim_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    stages.add_parsers(sub)
    services.add_parsers(sub)
    bench.add_parsers(sub)
    reconstruct.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a multi-process pre-training re-launches itself with the same arguments
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader lists every CPU variant it tried
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not its system-metrics start/stop lines
    warnings.simplefilter("default")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # dependencies' (sqlalchemy via mlflow)
    warnings.filterwarnings("ignore", category=ResourceWarning)  # `mim up` leaves its servers running on purpose
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # a stop from a scheduler, dvc or Prefect ends like a Ctrl-C
    try:
        return args.func(args)
    except KeyboardInterrupt as stop:
        if os.environ.get("MIM_DEBUG"):
            raise
        how = "stopped (SIGTERM)" if isinstance(stop, Terminated) else "interrupted (Ctrl-C)"
        print(f"mim {args.command}: {how}; files it had written are whole (a checkpoint resumes the run)",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    except Exception as err:
        if os.environ.get("MIM_DEBUG"):
            raise
        return report_error(args.command, err)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that `finally` blocks run and an MLflow run ends KILLED."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

# an OSError with one of these causes is the machine's state (a full disk, a quota, a failing device, permissions),
# not a bug: one line naming the file
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}

# the batch size a command's out-of-memory error is lowered with, when the error did not say (see `oom_hint`)
_OOM_PARAMS = {"pretrain": "train.batch_size (or raise train.accum_steps)", "transfer": "finetune.batch_size",
               "evaluate": "batch_size in params/eval.yaml"}


def report_error(command: str, err: Exception) -> int:
    """One line for the errors users cause or the machine's state causes; anything else is a bug and keeps its
    traceback. Exit codes: 1 for errors, 2 for params errors (130 for Ctrl-C, in `main`)."""
    import torch

    from mim.data import EmptyDatasetError
    from mim.engine.launch import LaunchError
    from mim.engine.runtime import GpuOutOfMemoryError
    from mim.engine.trainer import NonFiniteLossError
    from mim.evaluation.finetune import FinetuneNonFiniteLossError
    from mim.io import MissingPackageError, OutputWriteError, UnreachableError
    from mim.models.state import CheckpointError
    from mim.project.services import ServiceError

    if isinstance(err, ParamsError):
        print(f"mim {command}: {err}", file=sys.stderr)
        return 2
    if isinstance(err, UsageError):
        print(f"mim {command}: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, CheckpointError | NonFiniteLossError | FinetuneNonFiniteLossError | EmptyDatasetError
                  | ServiceError | OutputWriteError | LaunchError | GpuOutOfMemoryError | FileNotFoundError
                  | ValueError):
        print(f"mim {command}: error: {err}", file=sys.stderr)
        return 1
    if isinstance(err, torch.cuda.OutOfMemoryError):
        lower = _OOM_PARAMS.get(command, "the batch size")
        print(f"mim {command}: error: the GPU ran out of memory: lower {lower}", file=sys.stderr)
        return 1
    if isinstance(err, MissingPackageError):
        print(f"mim {command}: error: {err}", file=sys.stderr)
        return 1
    if isinstance(err, OSError) and (err.errno in _ENVIRONMENT_ERRNOS or isinstance(
            err, UnreachableError | IsADirectoryError | NotADirectoryError)):
        named = err.filename and str(err.filename) in (err.strerror or "")
        where = f"{err.filename}: " if err.filename and not named else ""
        print(f"mim {command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    raise err


if __name__ == "__main__":
    sys.exit(main())
