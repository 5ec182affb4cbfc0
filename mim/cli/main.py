"""`mim <command>`: the parser, logging set-up, and one line (not a traceback) for errors users cause."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

from mim.cli import bench, services, stages
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
    try:
        return args.func(args)
    except Exception as err:
        if os.environ.get("MIM_DEBUG"):
            raise
        return report_error(args.command, err)


def report_error(command: str, err: Exception) -> int:
    """One line for the errors users cause; anything else is a bug and keeps its traceback."""
    from mim.data import EmptyDatasetError
    from mim.engine.trainer import NonFiniteLossError
    from mim.models.state import CheckpointError
    from mim.project.services import ServiceError

    if isinstance(err, ParamsError):
        print(f"mim {command}: {err}", file=sys.stderr)
        return 2
    if isinstance(err, CheckpointError | NonFiniteLossError | EmptyDatasetError | ServiceError | FileNotFoundError
                  | ValueError):
        print(f"mim {command}: error: {err}", file=sys.stderr)
        return 1
    raise err


if __name__ == "__main__":
    sys.exit(main())
