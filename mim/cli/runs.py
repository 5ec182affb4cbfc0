"""One-off runs outside the pipeline: `mim pretrain --params FILE --out DIR` and `mim evaluate --encoder FILE`.
They call the stages' own code (`mim.stages.pretrain.train`, `mim.stages.evaluate.evaluate`) with another layout:
one folder (or fsspec URL) per run, no DVC, no MLflow."""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
from typing import TYPE_CHECKING

from mim.cli.common import write_json
from mim.io import check_output_folder

if TYPE_CHECKING:
    from mim.data.shards import ShardSplit
    from mim.params import DataParams, PretrainParams

log = logging.getLogger("mim")


def pretrain(args: argparse.Namespace) -> int:
    from mim.params.files import load_one_off

    params = load_one_off(args.params_dir, args.method, args.params, args.overrides)
    out = (args.out or f"runs/{params.method.name}").rstrip("/")
    check_output_folder(out)  # a file in the way, a read-only disk, memory://: said before any work
    from mim.project.lock import holding, lock_file_of

    with holding(lock_file_of(out), out):  # for the whole run, its ranks included
        return _pretrain_into(args, params, out)


def _pretrain_into(args: argparse.Namespace, params: PretrainParams, out: str) -> int:
    from mim.engine.launch import needs_launch, relaunch_with_torchrun

    data = one_off_data(params.data, out, prepare_here=os.environ.get("RANK") is None)  # before any re-launch
    if needs_launch(params.launcher.nproc_per_node, params.launcher.nnodes):
        return relaunch_with_torchrun(params.launcher.nproc_per_node, params.launcher.nnodes, args.argv,
                                      params.launcher.rdzv_timeout_s)
    from mim.params.bind.training import pretrain_run
    from mim.project.layout import PARAMS_FILE
    from mim.project.runs import run_files

    files = run_files(out)
    result = pretrain_run(params, files, f"{out}/{PARAMS_FILE}", data=data)
    if os.environ.get("RANK", "0") == "0":
        log.info("done: %d steps, final loss %.4f, %.0f img/s, %.1f s; encoder at %s, full model at %s", result.steps,
                 result.final_loss, result.images_per_s, result.wall_time_s, files.encoder, files.model)
    return 0


PREPARED_DIR = "prepared"


def one_off_data(data_params: DataParams, out: str, prepare_here: bool) -> ShardSplit | None:
    """The training data of a one-off run: None (loaded in memory) for the array form; for shards, the train split
    written once under `<out>/prepared/` (reused while the data params are the same; the ranks of a re-launched
    run only open it), then streamed."""
    from mim.data.prepared import open_prepared, read_manifest
    from mim.params.bind.data import prepare, storage_form

    if storage_form(data_params, "train") != "shards":
        return None
    root = f"{out}/{PREPARED_DIR}"
    wanted = data_params.model_dump(mode="json")
    try:
        ready = read_manifest(root).get("data") == wanted
    except (FileNotFoundError, ValueError):
        ready = False
    if not ready and prepare_here:
        prepare(data_params, root, splits=("train",))
    return open_prepared(root, "train")


def evaluate(args: argparse.Namespace) -> int:
    from mim.models.export import load_encoder, read_metadata
    from mim.params import EvalParams, load_params, split_overrides
    from mim.params.bind.data import load_split
    from mim.params.bind.encoders import random_init_encoder
    from mim.params.files import load_data
    from mim.stages.evaluate import evaluate

    data_sets, eval_sets = split_overrides(args.overrides, "data")
    params = load_params(EvalParams, args.params, eval_sets)
    if args.out:  # checked before the evaluation, not after it
        check_output_folder(posixpath.dirname(args.out) or ".", args.out)
    data = load_data(args.params_dir, data_sets)  # never the file's metadata: it may name any URL
    note_trained_on(args.encoder, read_metadata(args.encoder), data)
    encoder = load_encoder(args.encoder, img_size=data.image_size)
    train = load_split(data, "eval_train")
    test = load_split(data, "test", classes=train.classes)  # labels by the fit split's class names
    log.info("evaluating %s on %s: %d train / %d test images", args.encoder, data.source, len(train), len(test))
    results = {"encoder": evaluate(encoder, train, test, params, data)}
    if args.baseline:
        results["random_init"] = evaluate(random_init_encoder(encoder.spec, params.seed, "random-init"), train, test,
                                          params, data)
        results["pixels"] = evaluate(None, train, test, params, data)
    print(format_eval_table(results))
    write_json(args.out, results)
    return 0


def note_trained_on(path: str, meta: dict[str, str], data: DataParams) -> None:
    """One log line when the data an encoder file says it was trained on differs from the data it is evaluated on
    (the file's data is only reported, never read as the source)."""
    try:
        trained = json.loads(meta.get("data") or "{}")
    except ValueError:
        trained = {}
    if not isinstance(trained, dict):
        trained = {}
    source, size = trained.get("source"), trained.get("image_size")
    if (source, size) != (None, None) and (source, size) != (data.source, data.image_size):
        log.info("%s was trained on %s at %s px; evaluating on %s at %d px (params/data.yaml and --set data.*, "
                 "never the file's metadata)", path, source, size, data.source, data.image_size)


def format_eval_table(results: dict[str, dict[str, float]]) -> str:
    names = {"encoder": "pre-trained encoder", "random_init": "random-init encoder (same shape)",
             "pixels": "raw pixels"}
    lines = [f"{'features':<34} {'k-NN top-1':>10} {'linear top-1':>13}"]
    for key, m in results.items():
        lines.append(f"{names.get(key, key):<34} {m['knn_top1']:>9.2f}% {m['linear_top1']:>12.2f}%")
    return "\n".join(lines)
