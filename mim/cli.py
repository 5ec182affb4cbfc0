"""`mim <command>`: the entry point of every stage. Errors print one clear message, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from mim.params import ParamsError


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter by its dotted path, e.g. --set train.steps=100 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mim", description="Masked image modeling pre-training.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train an encoder with a MIM method")
    p.add_argument("--method", choices=["mae", "simmim"], help="method (must agree with the params file if given)")
    p.add_argument("--params", help="YAML params file (PretrainParams); defaults fit Fashion-MNIST on a CPU")
    p.add_argument("--out", help="output directory or fsspec URL (default runs/<method>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt when present")
    _add_set(p)

    e = sub.add_parser("evaluate", help="k-NN and linear probe of a frozen exported encoder")
    e.add_argument("--encoder", required=True, help="encoder.safetensors written by `mim pretrain`")
    e.add_argument("--params", help="YAML eval params file (EvalParams)")
    e.add_argument("--baseline", action="store_true",
                   help="also evaluate a randomly initialised encoder of the same shape, and raw pixels")
    e.add_argument("--out", help="write the metrics as JSON here")
    _add_set(e)

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
    return parser


def cmd_pretrain(args: argparse.Namespace, argv: list[str]) -> int:
    from mim.engine.launch import needs_launch, relaunch_with_torchrun
    from mim.engine.pretrain import pretrain
    from mim.params import PretrainParams, load_params, read_yaml

    base = {}
    if args.method:
        file_method = (read_yaml(args.params).get("method") or {}).get("name") if args.params else None
        if file_method and file_method != args.method:
            raise ParamsError(f"{args.params}: method.name is {file_method!r} but --method is {args.method!r}")
        base = {"method": {"name": args.method}}
    params = load_params(PretrainParams, args.params, args.overrides, base=base)
    if needs_launch(params.launcher):
        return relaunch_with_torchrun(params.launcher, argv)
    out = args.out or f"runs/{params.method.name}"
    result = pretrain(params, out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        logging.getLogger("mim").info("done: %d steps, final loss %.4f, %.0f img/s, %.1f s; encoder at %s/%s",
                                      result.steps, result.final_loss, result.images_per_s, result.wall_time_s, out,
                                      "encoder.safetensors")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from mim.evaluation.evaluate import evaluate_encoder, evaluate_pixels, load_eval_data
    from mim.models.export import load_encoder, read_metadata
    from mim.models.vit import build_vit
    from mim.params import DataParams, EvalParams, load_params, validate
    from mim.rng import derive_seed

    eval_sets = [o for o in args.overrides if not o.startswith("data.")]
    data_sets = [o.removeprefix("data.") for o in args.overrides if o.startswith("data.")]
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
        results["random_init"] = evaluate_encoder(build_vit(encoder.spec), train, test, params, data)
        results["pixels"] = evaluate_pixels(train, test, params, data)
    print(format_eval_table(results))
    if args.out:
        from mim.engine.trainer import write_text

        write_text(args.out, json.dumps(results, indent=2) + "\n")
    return 0


def format_eval_table(results: dict[str, dict[str, float]]) -> str:
    names = {"encoder": "pre-trained encoder", "random_init": "random-init encoder (same shape)",
             "pixels": "raw pixels"}
    lines = [f"{'features':<34} {'k-NN top-1':>10} {'linear top-1':>13}"]
    for key, m in results.items():
        lines.append(f"{names.get(key, key):<34} {m['knn_top1']:>9.2f}% {m['linear_top1']:>12.2f}%")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
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
    warnings.simplefilter("default")

    try:
        if args.command == "pretrain":
            return cmd_pretrain(args, argv)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        return cmd_bench(args)
    except Exception as err:
        if os.environ.get("MIM_DEBUG"):
            raise
        return _report(args.command, err)


def _report(command: str, err: Exception) -> int:
    """One line for the errors users cause; anything else is a bug and keeps its traceback."""
    from mim.data import EmptyDatasetError
    from mim.engine.checkpoint import CheckpointError
    from mim.engine.trainer import NonFiniteLossError

    if isinstance(err, ParamsError):
        print(f"mim {command}: {err}", file=sys.stderr)
        return 2
    if isinstance(err, CheckpointError | NonFiniteLossError | EmptyDatasetError | FileNotFoundError | ValueError):
        print(f"mim {command}: error: {err}", file=sys.stderr)
        return 1
    raise err


if __name__ == "__main__":
    sys.exit(main())
