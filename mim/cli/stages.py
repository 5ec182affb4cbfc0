"""The pipeline's commands, one per `dvc.yaml` stage (`mim prepare`, `mim pretrain --method M`, ...), plus
`mim params` and `mim compare`. `pretrain` and `evaluate` also have a one-off form (`runs`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

from mim.cli import export, runs
from mim.cli.common import UsageError, add_params_dir, add_set, refuse_sets
from mim.params import DEFAULT_PARAMS_DIR, METHOD_NAMES, ParamsError
from mim.tracking.timings import stage_clock


def add_parsers(sub: argparse._SubParsersAction) -> None:
    pp = sub.add_parser("params", help="validate or print the params files")
    psub = pp.add_subparsers(dest="params_command", required=True)
    pc = psub.add_parser("check", help="validate every params/*.yaml against its model")
    pc.add_argument("--dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    ps = psub.add_parser("show", help="print the resolved values (defaults filled in) of params files")
    ps.add_argument("names", nargs="*", help="file names without .yaml (default: all)")
    ps.add_argument("--dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    pu = psub.add_parser("use", help="make a params set (params/sets/<name>/) the active params",
                         description="Copy every file of params/sets/NAME/ over params/ after validating them, e.g. "
                         "`mim params use in1k-vit-b16 --source /data/imagenet` for ViT-B/16 at 224 px at the "
                         "papers' scale, `mim params use cpu-demo` for the CPU demo (docs/recipes.md).")
    pu.add_argument("name", help="the set's folder name under params/sets/")
    pu.add_argument("--source", help="also set data.source (an image folder or fsspec URL)")
    pu.add_argument("--dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    psub.add_parser("reference", help="print the params reference (every file's keys, types, defaults) as markdown",
                    description="Markdown generated from the pydantic models: `mim params reference > "
                    "docs/params.md` regenerates the docs page.")
    pp.set_defaults(func=cmd_params)

    simple = {"prepare": "stage: read the data source once and write data/prepared/",
              "tokenizer": "stage: k-means codebook of patch pixels -> models/tokenizer/ (CCViT)",
              "teacher": "stage: resolve and verify the teacher -> models/teacher/manifest.json",
              "diversity": "stage: token diversity of teachers/encoders per level -> metrics/diversity.json"}
    for name, text in simple.items():
        p = sub.add_parser(name, help=text)
        add_params_dir(p)
        add_set(p)
        p.set_defaults(func=cmd_simple_stage)

    p = sub.add_parser("pretrain", help="pre-train an encoder with a MIM method",
                       description="Stage form (what dvc.yaml runs): `mim pretrain --method M --seed S` writes "
                       "models/M/seed-S/, metrics/pretrain/M/seed-S.json and plots/pretrain/M/seed-S/, with "
                       "train.seed = S. One-off form: `--out DIR` (and/or `--params "
                       "FILE`) trains into DIR (default runs/<method>). Both forms read their params by one rule: "
                       "the data is PARAMS_DIR/data.yaml (the one-off form: when it exists), the recipe is "
                       "PARAMS_DIR/M.yaml, or the one-off form's --params FILE (then PARAMS_DIR/M.yaml is not "
                       "read; a `data:` section in FILE overrides data.yaml key by key; without either file the "
                       "built-in defaults), and --set KEY=VALUE (data.KEY too) goes last.")
    p.add_argument("--method", metavar="RECIPE", help=f"a method ({', '.join(METHOD_NAMES)}) or a variant recipe "
                   "(params/<name>.yaml naming its method, e.g. cim-resnet)")
    add_seed(p, "train.seed")
    add_params_dir(p, "data.yaml and the recipes: ")
    p.add_argument("--params", help="one-off form: YAML params file (a recipe, optionally with a `data:` section "
                   "that overrides PARAMS_DIR/data.yaml)")
    p.add_argument("--out", help="one-off form: output directory or fsspec URL (default runs/<method>)")
    p.add_argument("--resume", nargs="?", const="auto", choices=("auto", "never", "force"),
                   help="sets train.resume (default auto: continue the checkpoint of a killed run when the same run "
                   "made it, refuse one made with other params, data, inputs or code; never: start over; force: "
                   "continue it anyway, recorded)")
    add_set(p)
    p.set_defaults(func=cmd_pretrain)

    e = sub.add_parser("evaluate", help="k-NN and linear probe of a frozen encoder",
                       description="Stage form: `mim evaluate --method M --seed S` evaluates "
                       "models/M/seed-S/encoder.safetensors on data/prepared with params/eval.yaml (its seed = S); "
                       "`--baseline-of R --seed S` evaluates a random-init encoder of recipe R's shape, `--pixels` the "
                       "raw pixels. One-off form: `--encoder FILE` on the data of "
                       "PARAMS_DIR/data.yaml (when it exists) and --set data.KEY=VALUE; the file's metadata is never "
                       "read as a data source.")
    e.add_argument("--method", metavar="RECIPE", help="stage form: evaluate this recipe's encoder (models/RECIPE)")
    e.add_argument("--baseline-of", metavar="RECIPE",
                   help="stage form: a random-init encoder of RECIPE's shape -> "
                   "metrics/evaluate/baseline-RECIPE/seed-S.json")
    add_seed(e, "eval.yaml's seed")
    e.add_argument("--pixels", action="store_true",
                   help="stage form: the raw-pixel baseline -> metrics/evaluate/pixels.json")
    add_params_dir(e, "data.yaml (both forms) and eval.yaml (stage form): ")
    e.add_argument("--encoder", help="one-off form: an encoder.safetensors written by `mim pretrain`")
    e.add_argument("--params", help="one-off form: YAML eval params file (EvalParams)")
    e.add_argument("--baseline", action="store_true",
                   help="one-off form: also a randomly initialised encoder of the same shape, and raw pixels")
    e.add_argument("--out", help="one-off form: write the metrics as JSON here")
    add_set(e)
    e.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("transfer", help="stage: fine-tune a pre-trained encoder (or the scratch baseline)")
    tr.add_argument("--method", metavar="RECIPE", help="fine-tune models/RECIPE/encoder.safetensors")
    tr.add_argument("--scratch", action="store_true", help="the same recipe from a random encoder (scratch_of)")
    add_seed(tr, "finetune.seed and eval.yaml's seed")
    add_params_dir(tr)
    add_set(tr)
    tr.set_defaults(func=cmd_transfer)

    rp = sub.add_parser("report", help="stage: reports/comparison.md and charts of every method and baseline")
    add_params_dir(rp)
    rp.set_defaults(func=cmd_report)

    cmp = sub.add_parser("compare", help="table of every method's pre-training cost and accuracy (metrics files)")
    cmp.add_argument("methods", nargs="*", help="default: every method in dvc.yaml")
    cmp.set_defaults(func=cmd_compare)
    export.add_parsers(sub)  # `mim export`: an encoder as a timm folder (mim/cli/export.py)


def add_seed(p: argparse.ArgumentParser, replaces: str) -> None:
    p.add_argument("--seed", type=int, metavar="S", help=f"stage form: the seed (one of params/pipeline.yaml's "
                   f"seeds); it replaces {replaces} and picks the per-seed outputs")


def stage_seed(args: argparse.Namespace, command: str) -> int:
    """The stage form's `--seed`, required: the outputs are per seed."""
    if args.seed is None:
        raise UsageError(f"stage form: give --seed S (one of params/pipeline.yaml's seeds), e.g. `mim {command} "
                          f"--seed 0`")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: a seed is a non-negative integer")
    return args.seed


def cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from mim.params import check_dir, load_file, resolved

    if args.params_command == "use":
        from mim.params.edit import use_set
        from mim.project.state import state_dir

        backup = state_dir() / "params-backup" / time.strftime("%Y%m%d-%H%M%S")
        written = use_set(args.dir, args.name, args.source, backup_dir=backup)
        print(f"{args.dir}: now the {args.name!r} set ({len(written)} files: {', '.join(written)})"
              + (f"; data.source = {args.source}" if args.source else ""))
        if backup.is_dir():
            kept = ", ".join(p.name for p in sorted(backup.iterdir()))
            print(f"the files it replaced are kept in {backup}/ ({kept})")
        return 0
    if args.params_command == "reference":
        from mim.params.reference import params_reference

        print(params_reference(), end="")
        return 0
    if args.params_command == "check":
        valid = check_dir(args.dir)
        print(f"{args.dir}: {len(valid)} params files valid ({', '.join(f'{n}.yaml' for n in valid)})")
        return 0
    names = args.names or [p.stem for p in sorted(Path(args.dir).glob("*.yaml"))]
    for name in names:
        print(f"# {Path(args.dir) / name}.yaml (resolved)")
        print(yaml.safe_dump(resolved(load_file(Path(args.dir) / f"{name}.yaml")), sort_keys=False))
    return 0


def cmd_simple_stage(args: argparse.Namespace) -> int:
    """prepare, tokenizer, teacher, diversity: `mim.stages.<name>.run(params_dir, overrides)`."""
    from mim.stages import diversity, prepare, teacher, tokenizer

    stage = {"prepare": prepare, "tokenizer": tokenizer, "teacher": teacher, "diversity": diversity}[args.command]
    refuse_sets(args, "data" if args.command == "prepare" else args.command)
    with stage_clock(args.command):
        result = stage.run(args.params_dir, args.overrides)
    if args.command == "teacher":
        print(json.dumps(result, indent=2))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    one_off = args.params is not None or args.out is not None
    if not one_off and not args.method:
        raise ParamsError("give --method (stage form) or --params/--out (one-off form)")
    if one_off and args.seed is not None:
        raise UsageError("--seed is the stage form's (dvc.yaml); a one-off run takes --set train.seed=S")
    if not one_off:
        refuse_sets(args, args.method, "--out DIR")
        seed = stage_seed(args, f"pretrain --method {args.method}")
    if args.resume:
        args.overrides = [*args.overrides, f"train.resume={args.resume}"]
    if one_off:
        return runs.pretrain(args)
    from mim.engine.launch import needs_launch, relaunch_with_torchrun
    from mim.params import load_pretrain
    from mim.project.layout import checkpoint_name, stage_name

    launcher = load_pretrain(args.params_dir, args.method, args.overrides).launcher
    with holding_checkpoint(checkpoint_name("pretrain", args.method, seed)):  # for the whole run, its ranks included
        if needs_launch(launcher.nproc_per_node, launcher.nnodes):
            return relaunch_with_torchrun(launcher.nproc_per_node, launcher.nnodes, args.argv,
                                          launcher.rdzv_timeout_s)
        from mim.stages import pretrain

        with stage_clock(stage_name("pretrain", args.method, seed)):  # rank 0 writes it (relaunched: from its start)
            metrics = pretrain.run(args.method, seed, args.params_dir, args.overrides)
    if metrics:
        logging.getLogger("mim").info("done: %d steps, final loss %.4f, %.0f img/s", metrics["steps"],
                                      metrics["final_loss"], metrics["images_per_s"])
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    stage_forms = [f for f in (args.method, args.baseline_of, args.pixels or None) if f]
    if args.encoder is not None:
        if stage_forms or args.seed is not None:
            raise ParamsError("--encoder (one-off form) cannot be combined with the stage form (--method, "
                              "--baseline-of, --pixels, --seed)")
        return runs.evaluate(args)
    if len(stage_forms) != 1:
        raise ParamsError("give one of --method R, --baseline-of R or --pixels (stage form), "
                          "or --encoder FILE (one-off form)")
    refuse_sets(args, "eval", "--encoder FILE")
    if args.pixels and args.seed is not None:
        raise UsageError("--pixels takes no --seed (raw pixels have no random init: eval.yaml's seed is used)")
    seed = None if args.pixels else stage_seed(args, f"evaluate {'--method' if args.method else '--baseline-of'} "
                                                     f"{args.method or args.baseline_of}")
    from mim.project.layout import stage_name
    from mim.stages import evaluate

    name = "pixels" if args.pixels else stage_name("baseline", args.baseline_of, seed) if args.baseline_of else \
        stage_name("evaluate", args.method, seed)
    with stage_clock(name):
        results = evaluate.run(args.method or args.baseline_of, seed, args.params_dir, args.overrides,
                               baseline=args.baseline_of is not None, pixels=args.pixels)
    label = "pixels" if args.pixels else "random_init" if args.baseline_of else "encoder"
    print(runs.format_eval_table({label: results}))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    if bool(args.method) == args.scratch:
        raise ParamsError("give one of --method RECIPE or --scratch")
    refuse_sets(args, "transfer")
    seed = stage_seed(args, f"transfer {f'--method {args.method}' if args.method else '--scratch'}")
    from mim.project.layout import checkpoint_name, stage_name
    from mim.stages import transfer

    name = stage_name("transfer", args.method, seed) if args.method else stage_name("scratch", "scratch", seed)
    with stage_clock(name), holding_checkpoint(checkpoint_name("transfer", args.method or "scratch", seed)):
        print(json.dumps(transfer.run(args.method, seed, args.params_dir, args.overrides), indent=2))
    return 0


def holding_checkpoint(name: str) -> contextlib.AbstractContextManager[None]:
    """The lock on stage `name`'s checkpoint folder `.mim/checkpoints/<name>/`, held while the stage runs."""
    from mim.project.layout import checkpoint_lock, checkpoint_url
    from mim.project.lock import holding

    return holding(checkpoint_lock(name), f"{Path(checkpoint_url(name)).parent}/ (the checkpoint of {name})")


def cmd_report(args: argparse.Namespace) -> int:
    from mim.stages import report

    with stage_clock("report"):  # its own seconds are written after its report: the next report shows them
        text = report.run(args.params_dir)
    print(text, end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mim.project.compare import comparison_table
    from mim.project.graph import pipeline_methods
    from mim.project.state import project_dir

    root = project_dir()
    known = list(pipeline_methods(root))
    if unknown := [m for m in args.methods if m not in known]:
        raise UsageError(f"unknown method {unknown[0]!r}: params/pipeline.yaml runs {', '.join(known)}")
    print(comparison_table(root, args.methods or known), end="")
    return 0
