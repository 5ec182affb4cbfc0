"""`mim reconstruct --model models/M/seed-0 --images DIR_OR_URL --out DIR`: reconstruction grids (and ViT attention
maps) of a trained model on your own images (docs/pictures.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mim.cli.common import positive_int

log = logging.getLogger("mim")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="reconstruction grids and attention maps of a trained model on your images",
                       description="Rebuild the method of a model folder (models/<recipe>/seed-<s>: params.json and "
                       "model.safetensors), show it a folder (or fsspec URL) of images of any size and format "
                       "(resized and center-cropped to the model's image size) and write grids of input / masked / "
                       "prediction / composite under a seeded mask (the same for every method at a given grid, "
                       "mask unit and ratio), and for a ViT encoder the class token's last-layer attention per "
                       "head.")
    p.add_argument("--model", required=True, help="model folder written by pre-training, e.g. models/mae/seed-0")
    p.add_argument("--images", required=True, help="folder or fsspec URL of image files (jpg, png, webp, tif, ...)")
    p.add_argument("--out", required=True, help="output folder for reconstructions-NN.png and attention-NN.png")
    p.add_argument("--seed", type=int, default=0, help="mask seed (default 0): the same seed gives the same masks")
    p.add_argument("--per-grid", type=positive_int, default=8, help="images per grid file (default 8)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto: a GPU if any")
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from mim.engine.runtime import resolve_device
    from mim.params.bind.saved import load_saved_method, reconstruct_images
    from mim.project.layout import ENCODER_FILE, MODEL_FILE, PARAMS_FILE

    folder = Path(args.model)
    method, params = load_saved_method(folder / MODEL_FILE, folder / PARAMS_FILE, folder / ENCODER_FILE)
    written = reconstruct_images(method, params, args.images, args.out, seed=args.seed, per_grid=args.per_grid,
                                 device=resolve_device(args.device, param="--device"))
    for path in written:
        print(path)
    return 0
