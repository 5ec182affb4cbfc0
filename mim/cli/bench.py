"""`mim bench ...`: benchmarks against a peer measured in the same run (`mim.bench`)."""

from __future__ import annotations

import argparse

from mim.cli.common import add_params_dir, add_set, positive_int, write_json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bp = bsub.add_parser("pretrain", help="training img/s and peak memory, ours vs transformers ViTMAE")
    bp.add_argument("--method", choices=["mae", "simmim"], default="mae")
    bp.add_argument("--model", choices=["micro", "tiny", "small", "base", "large"], default="tiny")
    bp.add_argument("--image-size", type=positive_int, default=32)
    bp.add_argument("--patch-size", type=positive_int, default=4)
    bp.add_argument("--batch", type=positive_int, default=64)
    bp.add_argument("--steps", type=positive_int, default=10, help="timed steps per round")
    bp.add_argument("--warmup", type=int, default=3)
    bp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bp.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    bp.add_argument("--compile", action="store_true")
    bp.add_argument("--decoder-dim", type=positive_int,
                    help="MAE decoder width (default: the official MAE decoder, 512)")
    bp.add_argument("--decoder-depth", type=positive_int, help="(default 8, the official decoder's)")
    bp.add_argument("--decoder-heads", type=positive_int, help="(default 16, the official decoder's)")
    bp.add_argument("--json", help="also write the result as JSON here")
    bt = bsub.add_parser("tokenizer", help="centroid tokenizer build/assign speed and inertia vs MiniBatchKMeans")
    bt.add_argument("--k", type=positive_int, default=1024)
    bt.add_argument("--patches", type=positive_int, default=200_000)
    bt.add_argument("--patch-size", type=positive_int, default=4)
    bt.add_argument("--iters", type=positive_int, default=20)
    bt.add_argument("--image-size", type=positive_int, default=32)
    bt.add_argument("--source", default="fashion-mnist")
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--json", help="also write the result as JSON here")
    bd = bsub.add_parser("dmjd", help="DMJD vs its single-view counterpart at equal wall-clock (k-NN reached)")
    add_params_dir(bd)
    bd.add_argument("--seconds", type=float, default=120.0, help="pre-training budget per variant")
    bd.add_argument("--eval-train", type=positive_int, default=10000)
    bd.add_argument("--eval-test", type=positive_int, default=2000)
    bd.add_argument("--json", help="also write the result as JSON here")
    add_set(bd)
    bc = bsub.add_parser("teacher-cache", help="Img2Vec with the teacher run every step vs its cached features")
    add_params_dir(bc)
    bc.add_argument("--epochs", type=float, default=3.0)
    bc.add_argument("--subset", type=positive_int, default=10000, help="training images")
    bc.add_argument("--json", help="also write the result as JSON here")
    add_set(bc)
    bdata = bsub.add_parser("data", help="shard loader img/s vs torchvision ImageFolder + DataLoader (same JPEGs, "
                            "transform, batch, workers); prepare time per 10k images")
    bdata.add_argument("--folder", help="an image folder (class sub-folders); default: --images synthetic JPEGs")
    bdata.add_argument("--images", type=positive_int, default=2000, help="synthetic JPEGs of mixed sizes to write")
    bdata.add_argument("--size", type=positive_int, default=224)
    bdata.add_argument("--batch", type=positive_int, default=64)
    bdata.add_argument("--workers", type=int, default=4)
    bdata.add_argument("--steps", type=positive_int, default=20, help="timed batches per loader")
    bdata.add_argument("--json", help="also write the result as JSON here")
    bm = bsub.add_parser("masks", help="time to draw each method's masks for one global batch (host CPU)")
    bm.add_argument("--batch", type=positive_int, default=2048)
    bm.add_argument("--image-size", type=positive_int, default=224)
    bm.add_argument("--patch-size", type=positive_int, default=16)
    bm.add_argument("--step-ms", type=float, help="a model step time to compare with (from `mim bench pretrain`)")
    bm.add_argument("--json", help="also write the result as JSON here")
    bmem = bsub.add_parser("memory", help="peak RSS of a training process on shards of 20k vs 200k images")
    bmem.add_argument("--json", help="also write the result as JSON here")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "memory":
        from mim.bench.memory import bench_memory, format_memory_bench

        result = bench_memory()
        text = format_memory_bench(result)
    elif args.bench == "masks":
        from mim.bench.masks import bench_masks, format_masks_bench

        result = bench_masks(args.batch, args.image_size, args.patch_size, step_ms=args.step_ms)
        text = format_masks_bench(result)
    elif args.bench == "data":
        from mim.bench.data import bench_data, format_data_bench

        result = bench_data(args.folder, images=args.images, size=args.size, batch=args.batch, workers=args.workers,
                            steps=args.steps)
        text = format_data_bench(result)
    elif args.bench == "teacher-cache":
        from mim.bench.teacher_cache import bench_teacher_cache, format_cache_bench

        result = bench_teacher_cache(args.params_dir, epochs=args.epochs, subset=args.subset,
                                     overrides=args.overrides)
        text = format_cache_bench(result)
    elif args.bench == "dmjd":
        from mim.bench.dmjd import bench_dmjd, format_dmjd_bench

        result = bench_dmjd(args.params_dir, seconds=args.seconds, eval_train=args.eval_train,
                            eval_test=args.eval_test, overrides=args.overrides)
        text = format_dmjd_bench(result)
    elif args.bench == "tokenizer":
        from mim.bench.tokenizer import bench_tokenizer, format_tokenizer_bench

        result = bench_tokenizer(k=args.k, num_patches=args.patches, patch_size=args.patch_size, iters=args.iters,
                                 seed=args.seed, source=args.source, image_size=args.image_size)
        text = format_tokenizer_bench(result)
    else:
        from mim.bench.pretrain import MAE_PAPER_DECODER, bench_pretrain, format_bench

        decoder = [given if given is not None else paper for given, paper in
                   zip((args.decoder_dim, args.decoder_depth, args.decoder_heads), MAE_PAPER_DECODER, strict=True)]
        result = bench_pretrain(method=args.method, model=args.model, image_size=args.image_size,
                                patch_size=args.patch_size, batch=args.batch, steps=args.steps, warmup=args.warmup,
                                device=args.device, amp=args.amp, compile=args.compile, decoder_dim=decoder[0],
                                decoder_depth=decoder[1], decoder_heads=decoder[2])
        text = format_bench(result)
    print(text)
    write_json(args.json, result)
    return 0
