"""What the command modules share: the `--set` and `--params-dir` options and result printing."""

from __future__ import annotations

import argparse
import importlib.util
import json
from typing import Any

from mim.io import MissingPackageError, write_text
from mim.params import DEFAULT_PARAMS_DIR


class UsageError(ValueError):
    """A command-line argument naming something that does not exist (exit 2, like argparse's own errors)."""


PIPELINE_PACKAGES = ("prefect", "mlflow", "dvc")  # what `pip install 'mim[pipeline]'` adds to the library


def require_pipeline() -> None:
    """`MissingPackageError` in one line unless the pipeline extra is installed: the commands that start servers,
    serve flows and run deployments need it (the library and the stage commands need it not)."""
    missing = [name for name in PIPELINE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackageError(f"needs the pipeline extra ({', '.join(missing)} not installed): "
                                  "pip install 'mim[pipeline]'")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of images, steps, clusters)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter by its dotted path, e.g. --set train.steps=100 (repeatable; one-off "
                   "forms only: the stage forms read params/*.yaml alone)")


def refuse_sets(args: argparse.Namespace, own_file: str, one_off: str | None = None) -> None:
    """The stage form (what dvc.yaml runs) takes no --set: its outputs are DVC-tracked, and a value in no params file
    would be recorded as if the files had made it. The line names the file to edit (data.* -> data.yaml)."""
    if not args.overrides:
        return
    key = args.overrides[0].partition("=")[0]
    name = "data" if key.startswith("data.") else own_file
    alternative = f", or use the one-off form ({one_off})" if one_off else ""
    raise UsageError(f"--set {args.overrides[0]}: the stage form reads its params only from the params files (its "
                      f"outputs are tracked by DVC); edit {args.params_dir}/{name}.yaml instead{alternative}")


def add_params_dir(p: argparse.ArgumentParser, form: str = "") -> None:
    p.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help=f"{form}params directory (default params)")


def write_json(path: str | None, result: dict[str, Any]) -> None:
    """Also write `result` as JSON at `path` (atomically) when one was given."""
    if path:
        write_text(path, json.dumps(result, indent=2) + "\n")
