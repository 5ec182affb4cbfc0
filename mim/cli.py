"""`mim <command>`: the entry point of every stage. Errors print one clear message, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from mim.params import DEFAULT_PARAMS_DIR, METHOD_NAMES, ParamsError


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter by its dotted path, e.g. --set train.steps=100 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mim", description="Masked image modeling pre-training.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("params", help="validate or print the params files")
    psub = pp.add_subparsers(dest="params_command", required=True)
    pc = psub.add_parser("check", help="validate every params/*.yaml against its model")
    pc.add_argument("--dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    ps = psub.add_parser("show", help="print the resolved values (defaults filled in) of params files")
    ps.add_argument("names", nargs="*", help="file names without .yaml (default: all)")
    ps.add_argument("--dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")

    pr = sub.add_parser("prepare", help="stage: read the data source once and write data/prepared/")
    pr.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    _add_set(pr)

    tk = sub.add_parser("tokenizer", help="stage: k-means codebook of patch pixels -> models/tokenizer/ (CCViT)")
    tk.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    _add_set(tk)

    th = sub.add_parser("teacher", help="stage: resolve and verify the teacher -> models/teacher/manifest.json")
    th.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    _add_set(th)

    dv = sub.add_parser("diversity",
                        help="stage: token diversity of teachers/encoders per level -> metrics/diversity.json")
    dv.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    _add_set(dv)

    p = sub.add_parser("pretrain", help="pre-train an encoder with a MIM method",
                       description="Stage form (what dvc.yaml runs): `mim pretrain --method M` reads params/M.yaml and "
                       "params/data.yaml and writes models/M/, metrics/pretrain/M.json and plots/pretrain/M/. "
                       "One-off form: `--params FILE` and/or `--out DIR` train into DIR from one params file.")
    p.add_argument("--method", metavar="RECIPE", help=f"a method ({', '.join(METHOD_NAMES)}) or a variant recipe "
                   "(params/<name>.yaml naming its method, e.g. cim-resnet)")
    p.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="stage form: params directory (default params)")
    p.add_argument("--params", help="one-off form: YAML params file (PretrainParams, data included)")
    p.add_argument("--out", help="one-off form: output directory or fsspec URL (default runs/<method>)")
    p.add_argument("--resume", action="store_true",
                   help="one-off form: continue from <out>/checkpoints/last.pt (the stage form always resumes)")
    _add_set(p)

    e = sub.add_parser("evaluate", help="k-NN and linear probe of a frozen encoder",
                       description="Stage form: `mim evaluate --method M` evaluates models/M/encoder.safetensors on "
                       "data/prepared with params/eval.yaml; `--baseline-of R` evaluates a random-init encoder of "
                       "recipe R's shape, `--pixels` the raw pixels. One-off form: `--encoder FILE`.")
    e.add_argument("--method", metavar="RECIPE", help="stage form: evaluate this recipe's encoder (models/RECIPE)")
    e.add_argument("--baseline-of", metavar="RECIPE",
                   help="stage form: a random-init encoder of RECIPE's shape -> metrics/evaluate/baseline-RECIPE.json")
    e.add_argument("--pixels", action="store_true",
                   help="stage form: the raw-pixel baseline -> metrics/evaluate/pixels.json")
    e.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="stage form: params directory (default params)")
    e.add_argument("--encoder", help="one-off form: an encoder.safetensors written by `mim pretrain`")
    e.add_argument("--params", help="one-off form: YAML eval params file (EvalParams)")
    e.add_argument("--baseline", action="store_true",
                   help="one-off form: also a randomly initialised encoder of the same shape, and raw pixels")
    e.add_argument("--out", help="one-off form: write the metrics as JSON here")
    _add_set(e)

    tr = sub.add_parser("transfer", help="stage: fine-tune a pre-trained encoder (or the scratch baseline)")
    tr.add_argument("--method", metavar="RECIPE", help="fine-tune models/RECIPE/encoder.safetensors")
    tr.add_argument("--scratch", action="store_true", help="the same recipe from a random encoder (scratch_of)")
    tr.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")
    _add_set(tr)

    rp = sub.add_parser("report", help="stage: reports/comparison.md and charts of every method and baseline")
    rp.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR, help="params directory (default params)")

    cmp = sub.add_parser("compare", help="table of every method's pre-training cost and accuracy (metrics files)")
    cmp.add_argument("methods", nargs="*", help="default: every method in dvc.yaml")

    for name, text in (("up", "start the local Prefect and MLflow servers (127.0.0.1, state in .mim/)"),
                       ("down", "stop the servers `mim up` started"), ("status", "show the local servers")):
        sv = sub.add_parser(name, help=text)
        if name == "up":
            sv.add_argument("--prefect-port", type=int, default=4200)
            sv.add_argument("--mlflow-port", type=int, default=5000)
    sub.add_parser("serve", help="serve the Prefect deployments (pretrain/<method>, pipeline/all); blocks")

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bp = bsub.add_parser("pretrain", help="training img/s and peak memory, ours vs transformers ViTMAE")
    bp.add_argument("--method", choices=["mae", "simmim"], default="mae")
    bp.add_argument("--model", choices=["micro", "tiny", "small", "base", "large"], default="tiny")
    bp.add_argument("--image-size", type=int, default=32)
    bp.add_argument("--patch-size", type=int, default=4)
    bp.add_argument("--batch", type=int, default=64)
    bp.add_argument("--steps", type=int, default=10, help="timed steps per round")
    bp.add_argument("--warmup", type=int, default=3)
    bp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bp.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    bp.add_argument("--compile", action="store_true")
    bp.add_argument("--decoder-dim", type=int, default=512)
    bp.add_argument("--decoder-depth", type=int, default=8)
    bp.add_argument("--decoder-heads", type=int, default=16)
    bp.add_argument("--json", help="also write the result as JSON here")
    bt = bsub.add_parser("tokenizer", help="centroid tokenizer build/assign speed and inertia vs MiniBatchKMeans")
    bt.add_argument("--k", type=int, default=1024)
    bt.add_argument("--patches", type=int, default=200_000)
    bt.add_argument("--patch-size", type=int, default=4)
    bt.add_argument("--iters", type=int, default=20)
    bt.add_argument("--image-size", type=int, default=32)
    bt.add_argument("--source", default="fashion-mnist")
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--json", help="also write the result as JSON here")
    bd = bsub.add_parser("dmjd", help="DMJD vs its single-view counterpart at equal wall-clock (k-NN reached)")
    bd.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR)
    bd.add_argument("--seconds", type=float, default=120.0, help="pre-training budget per variant")
    bd.add_argument("--eval-train", type=int, default=10000)
    bd.add_argument("--eval-test", type=int, default=2000)
    bd.add_argument("--json", help="also write the result as JSON here")
    _add_set(bd)
    bc = bsub.add_parser("teacher-cache", help="Img2Vec with the teacher run every step vs its cached features")
    bc.add_argument("--params-dir", default=DEFAULT_PARAMS_DIR)
    bc.add_argument("--epochs", type=float, default=3.0)
    bc.add_argument("--subset", type=int, default=10000, help="training images")
    bc.add_argument("--json", help="also write the result as JSON here")
    _add_set(bc)
    return parser


def cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from mim.params import check_dir, load_file, resolved

    if args.params_command == "check":
        valid = check_dir(args.dir)
        print(f"{args.dir}: {len(valid)} params files valid ({', '.join(f'{n}.yaml' for n in valid)})")
        return 0
    names = args.names or [p.stem for p in sorted(Path(args.dir).glob("*.yaml"))]
    for name in names:
        print(f"# {Path(args.dir) / name}.yaml (resolved)")
        print(yaml.safe_dump(resolved(load_file(Path(args.dir) / f"{name}.yaml")), sort_keys=False))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from mim.stages import prepare

    prepare.run(args.params_dir, args.overrides)
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from mim.stages import tokenizer

    tokenizer.run(args.params_dir, args.overrides)
    return 0


def cmd_diversity(args: argparse.Namespace) -> int:
    from mim.stages import diversity

    diversity.run(args.params_dir, args.overrides)
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    if bool(args.method) == args.scratch:
        raise ParamsError("mim transfer: give one of --method RECIPE or --scratch")
    from mim.stages import transfer

    results = transfer.run(args.method, args.params_dir, args.overrides)
    print(json.dumps(results, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mim.stages import report

    print(report.run(args.params_dir), end="")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from mim.stages import teacher

    manifest = teacher.run(args.params_dir, args.overrides)
    print(json.dumps(manifest, indent=2))
    return 0


def cmd_pretrain(args: argparse.Namespace, argv: list[str]) -> int:
    from mim.engine.launch import needs_launch, relaunch_with_torchrun
    from mim.params import PretrainParams, load_params, load_pretrain, read_yaml

    one_off = args.params is not None or args.out is not None
    if not one_off:
        if not args.method:
            raise ParamsError("mim pretrain: give --method (stage form) or --params/--out (one-off form)")
        params = load_pretrain(args.params_dir, args.method, args.overrides)
        if needs_launch(params.launcher):
            return relaunch_with_torchrun(params.launcher, argv)
        from mim.stages import pretrain as stage

        metrics = stage.run(args.method, args.params_dir, args.overrides)
        if metrics:
            logging.getLogger("mim").info("done: %d steps, final loss %.4f, %.0f img/s", metrics["steps"],
                                          metrics["final_loss"], metrics["images_per_s"])
        return 0
    base = {}
    if args.method:
        file_method = (read_yaml(args.params).get("method") or {}).get("name") if args.params else None
        if file_method and file_method != args.method:
            raise ParamsError(f"{args.params}: method.name is {file_method!r} but --method is {args.method!r}")
        base = {"method": {"name": args.method}}
    params = load_params(PretrainParams, args.params, args.overrides, base=base)
    if needs_launch(params.launcher):
        return relaunch_with_torchrun(params.launcher, argv)
    from mim.engine.pretrain import pretrain

    out = args.out or f"runs/{params.method.name}"
    result = pretrain(params, out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        logging.getLogger("mim").info("done: %d steps, final loss %.4f, %.0f img/s, %.1f s; encoder at %s/%s",
                                      result.steps, result.final_loss, result.images_per_s, result.wall_time_s, out,
                                      "encoder.safetensors")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    stage_forms = [f for f in (args.method, args.baseline_of, args.pixels or None) if f]
    if args.encoder is None:
        if len(stage_forms) != 1:
            raise ParamsError("mim evaluate: give one of --method R, --baseline-of R or --pixels (stage form), "
                              "or --encoder FILE (one-off form)")
        from mim.stages import evaluate as stage

        results = stage.run(args.method or args.baseline_of, args.params_dir, args.overrides,
                            baseline=args.baseline_of is not None, pixels=args.pixels)
        label = "pixels" if args.pixels else "random_init" if args.baseline_of else "encoder"
        print(format_eval_table({label: results}))
        return 0
    if stage_forms:
        raise ParamsError("mim evaluate: --encoder (one-off form) cannot be combined with the stage form")
    import torch

    from mim.evaluation.evaluate import evaluate_encoder, evaluate_pixels, load_eval_data
    from mim.models.export import build_encoder, load_encoder, read_metadata
    from mim.params import DataParams, EvalParams, load_params, split_overrides, validate
    from mim.rng import derive_seed

    data_sets, eval_sets = split_overrides(args.overrides, "data")
    params = load_params(EvalParams, args.params, eval_sets)
    meta = read_metadata(args.encoder)
    data_base = json.loads(meta["data"]) if "data" in meta else {}
    data = load_params(DataParams, None, data_sets, base=data_base) if data_sets else validate(
        DataParams, data_base, f"{args.encoder} (metadata)")
    encoder = load_encoder(args.encoder)
    train, test = load_eval_data(data, params)
    log = logging.getLogger("mim")
    log.info("evaluating %s on %s: %d train / %d test images", args.encoder, data.source, len(train), len(test))
    results = {"encoder": evaluate_encoder(encoder, train, test, params, data)}
    if args.baseline:
        torch.manual_seed(derive_seed(params.seed, "random-init"))
        results["random_init"] = evaluate_encoder(build_encoder(encoder.spec), train, test, params, data)
        results["pixels"] = evaluate_pixels(train, test, params, data)
    print(format_eval_table(results))
    if args.out:
        from mim.engine.checkpoint import write_text

        write_text(args.out, json.dumps(results, indent=2) + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mim.stages.compare import comparison_table, pipeline_methods
    from mim.tracking import project_dir

    root = project_dir()
    print(comparison_table(root, args.methods or list(pipeline_methods(root))), end="")
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    from mim import services
    from mim.tracking import project_dir

    root = project_dir()
    if args.command == "up":
        states = services.up(root, prefect_port=args.prefect_port, mlflow_port=args.mlflow_port)
        for name, st in states.items():
            print(f"{name:<8} {st.url}  (pid {st.pid}, log {st.log})")
        print(f"Prefect API: {_point_prefect_profile(states['prefect'].url + '/api')}")
        print(f"MLflow UI:   {states['mlflow'].url}")
        return 0
    if args.command == "down":
        stopped = services.down(root)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    for name, st in services.status(root).items():
        print(f"{name:<8} " + (f"{st.url}  (pid {st.pid})" if st else "not running"))
    return 0


def _point_prefect_profile(api_url: str) -> str:
    """Point the active Prefect profile at our server, so a plain `prefect deployment run ...` finds it."""
    import subprocess

    prefect = Path(sys.executable).parent / "prefect"
    cmd = [str(prefect), "config", "set", f"PREFECT_API_URL={api_url}", "PREFECT_SERVER_ANALYTICS_ENABLED=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        return f"export PREFECT_API_URL={api_url}  (could not set it in the Prefect profile: {done.stderr.strip()})"
    return f"{api_url} (set in the active Prefect profile; `prefect config unset PREFECT_API_URL` undoes it)"


def cmd_serve(args: argparse.Namespace) -> int:
    from mim import services
    from mim.tracking import project_dir

    root = project_dir()
    if not os.environ.get("PREFECT_API_URL"):
        url = services.prefect_api_url(root)
        if url is None:
            raise services.ServiceError("no Prefect server: run `mim up` first (or set PREFECT_API_URL)")
        os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["MIM_PROJECT_DIR"] = str(root)  # flow runs act on this project, wherever their process starts
    from flows.serve import serve_all  # imports prefect, which reads PREFECT_API_URL

    print(f"serving deployments against {os.environ['PREFECT_API_URL']} for {root}", flush=True)
    serve_all()
    return 0


def format_eval_table(results: dict[str, dict[str, float]]) -> str:
    names = {"encoder": "pre-trained encoder", "random_init": "random-init encoder (same shape)",
             "pixels": "raw pixels"}
    lines = [f"{'features':<34} {'k-NN top-1':>10} {'linear top-1':>13}"]
    for key, m in results.items():
        lines.append(f"{names.get(key, key):<34} {m['knn_top1']:>9.2f}% {m['linear_top1']:>12.2f}%")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "teacher-cache":
        from mim.bench_cache import bench_teacher_cache, format_cache_bench

        result = bench_teacher_cache(args.params_dir, epochs=args.epochs, subset=args.subset,
                                     overrides=args.overrides)
        print(format_cache_bench(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.bench == "dmjd":
        from mim.bench_dmjd import bench_dmjd, format_dmjd_bench

        result = bench_dmjd(args.params_dir, seconds=args.seconds, eval_train=args.eval_train,
                            eval_test=args.eval_test, overrides=args.overrides)
        print(format_dmjd_bench(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.bench == "tokenizer":
        from mim.bench_tokenizer import bench_tokenizer, format_tokenizer_bench

        result = bench_tokenizer(k=args.k, num_patches=args.patches, patch_size=args.patch_size, iters=args.iters,
                                 seed=args.seed, source=args.source, image_size=args.image_size)
        print(format_tokenizer_bench(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    from mim.bench import bench_pretrain, format_bench

    result = bench_pretrain(method=args.method, model=args.model, image_size=args.image_size,
                            patch_size=args.patch_size, batch=args.batch, steps=args.steps, warmup=args.warmup,
                            device=args.device, amp=args.amp, compile=args.compile, decoder_dim=args.decoder_dim,
                            decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads)
    print(format_bench(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader lists every CPU variant it tried
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not its system-metrics start/stop lines
    warnings.simplefilter("default")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # dependencies' (sqlalchemy via mlflow)
    warnings.filterwarnings("ignore", category=ResourceWarning)  # `mim up` leaves its servers running on purpose
    logging.getLogger("httpx").setLevel(logging.WARNING)  # `mim serve` would log every Prefect API request

    try:
        if args.command == "pretrain":
            return cmd_pretrain(args, argv)
        commands = {"params": cmd_params, "prepare": cmd_prepare, "tokenizer": cmd_tokenizer, "teacher": cmd_teacher,
                    "diversity": cmd_diversity, "transfer": cmd_transfer,
                    "report": cmd_report,
                    "evaluate": cmd_evaluate,
                    "bench": cmd_bench, "compare": cmd_compare,
                    "up": cmd_services, "down": cmd_services, "status": cmd_services, "serve": cmd_serve}
        return commands[args.command](args)
    except Exception as err:
        if os.environ.get("MIM_DEBUG"):
            raise
        return _report(args.command, err)


def _report(command: str, err: Exception) -> int:
    """One line for the errors users cause; anything else is a bug and keeps its traceback."""
    from mim.data import EmptyDatasetError
    from mim.engine.checkpoint import CheckpointError
    from mim.engine.trainer import NonFiniteLossError
    from mim.services import ServiceError

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
