"""`mim export RECIPE DIR [--seed S]` (or `mim export --encoder FILE DIR`): an encoder as a timm folder (`config.json`,
`model.safetensors`, `README.md`) that `timm.create_model("local-dir:DIR", pretrained=True)` loads; `--push org/name`
uploads it to the Hugging Face hub. The library part is `mim.models.timm_export`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mim.cli.common import UsageError, add_params_dir, positive_int

log = logging.getLogger("mim.export")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an encoder as a timm folder (config.json + model.safetensors)",
                       usage="%(prog)s RECIPE DIR [options]\n       %(prog)s --encoder FILE DIR [options]",
                       description="`mim export RECIPE DIR` reads models/RECIPE/seed-S/encoder.safetensors "
                       "(`--encoder FILE DIR` any encoder file) and writes DIR/config.json, DIR/model.safetensors "
                       "and a DIR/README.md model card, so that `timm.create_model('local-dir:DIR', pretrained=True)` "
                       "builds it with no other argument and model(x) gives the features mim's evaluation uses (the "
                       "pooling of PARAMS_DIR/eval.yaml). A ViT (any shape) and a timm CNN export; the hierarchical "
                       "MixMIM encoder is refused (no timm model computes it). docs/export.md.")
    p.add_argument("paths", nargs="+", metavar="RECIPE|DIR", help="the recipe whose models/RECIPE/seed-S/"
                   "encoder.safetensors to export and the output folder (with --encoder: the output folder alone)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the pipeline seed whose encoder to export "
                   "(default 0)")
    p.add_argument("--encoder", metavar="FILE", help="export this encoder.safetensors (a one-off run's) instead of a "
                   "recipe's")
    p.add_argument("--pool", choices=("cls", "mean"), help="the features model(x) gives: the class token or the mean "
                   "patch token (default: `pool` of PARAMS_DIR/eval.yaml, what k-NN and the linear probe used; a CNN "
                   "always averages its map)")
    p.add_argument("--img-size", type=positive_int, help="input size (default: the size of the data the encoder was "
                   "trained on, as `mim evaluate` rebuilds it; a ViT's position table is resampled)")
    p.add_argument("--push", metavar="ORG/NAME", help="also upload DIR to this Hugging Face model repository (needs "
                   "HF_TOKEN or a saved `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --push: create the repository private")
    add_params_dir(p, "eval.yaml (the pooling): ")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mim.io import check_output_folder
    from mim.models.hub import check_repo_id, hub_token, push_folder
    from mim.models.timm_export import check_local, export_for_timm
    from mim.project.layout import encoder_file, stage_name

    if args.encoder:
        if len(args.paths) != 1:
            raise UsageError(f"with --encoder give the output folder alone, got {' '.join(args.paths)}")
        path, name, out = args.encoder, None, args.paths[0]
    else:
        if len(args.paths) != 2:
            raise UsageError(f"give RECIPE DIR (or --encoder FILE DIR), got {' '.join(args.paths)}")
        name, out = args.paths
        path = str(encoder_file(name, args.seed))
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no encoder of recipe {name!r} at seed {args.seed} there (run `dvc repro "
                                    f"{stage_name('pretrain', name, args.seed)}` first, or give --encoder FILE)")
    check_local(out)
    check_output_folder(out)  # a file in the way or a read-only place: one line before any work
    if args.push:
        check_repo_id(args.push)
        token = hub_token(args.push)  # before any work: without credentials nothing is written or sent
    export = export_for_timm(path, out, args.pool or _eval_pool(args.params_dir), name, args.img_size, args.push)
    log.info("exported %s to %s: %s", path, out, export.summary)
    log.info("load it with timm.create_model('local-dir:%s', pretrained=True)", out)
    if args.push:
        log.info("uploaded to %s", push_folder(out, args.push, token, args.private))
    return 0


def _eval_pool(params_dir: str) -> str:
    """The pooling of PARAMS_DIR/eval.yaml (the model's default when the file does not exist)."""
    from mim.params import EvalParams, load_params

    file = Path(params_dir) / "eval.yaml"
    return load_params(EvalParams, file if file.is_file() else None).pool
