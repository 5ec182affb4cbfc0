"""`mim tokenizer`: the k-means codebook of raw patch pixels (CCViT's targets), built from the training split.

Outputs: `models/tokenizer/` (centroids.npy, tokenizer.json, centroids.png), `metrics/tokenizer/tokenizer.json`
(build time, inertia, codebook usage and perplexity and reconstruction error on held-out images).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mim.analysis import save_codebook_grid
from mim.data.prepared import open_prepared
from mim.io import write_text
from mim.params import load_with_data
from mim.params.bind.data import augment, check_prepared
from mim.project.layout import PREPARED, metrics_file, model_dir
from mim.rng import generator_for
from mim.targets.centroids import CentroidTokenizer, codebook_usage, sample_patch_vectors
from mim.tracking import StageRun
from mim.tracking.timings import timed

log = logging.getLogger("mim.tokenizer")


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    t, d = load_with_data(params_dir, "tokenizer", overrides)
    check_prepared(d, PREPARED, Path(params_dir) / "data.yaml")
    d.token_grid(t.patch_size, "tokenizer.patch_size")  # refuses a patch size that does not tile the images
    with timed("data_s"):  # shards: decoded as sampled
        train, test = open_prepared(PREPARED, "train"), open_prepared(PREPARED, "test")
    transform, out = augment(d), model_dir("tokenizer")
    channels = transform.out_channels(train.channels)
    with StageRun("tokenizer") as tracker:
        tracker.log_params({"tokenizer": t.model_dump(mode="json"), "data": d.model_dump(mode="json")})
        tracker.log_dataset("train", str(PREPARED), train.digest())
        patches = sample_patch_vectors(train.images, transform, t.patch_size, t.max_patches,
                                       generator_for(t.seed, "tokenizer", "train"))
        log.info("k-means: k=%d on %d vectors of %d dims, %d iterations", t.k, len(patches), patches.shape[1],
                 t.iterations)
        tok = CentroidTokenizer.build(patches, t.k, t.iterations, t.seed, patch_size=t.patch_size, channels=channels,
                                      data_digest=train.digest())
        per_image = (d.image_size // t.patch_size) ** 2
        held = sample_patch_vectors(test.images, transform, t.patch_size, t.heldout_images * per_image,
                                    generator_for(t.seed, "tokenizer", "heldout"))
        ids = tok.assign(held)
        metrics = {"build_s": tok.info.build_s, "inertia": tok.info.inertia, "num_vectors": len(patches),
                   **{f"heldout_{k}": v for k, v in codebook_usage(ids, t.k).items()},
                   "heldout_mse": float((tok.decode(ids) - held).pow(2).mean())}
        tok.info.extra = metrics
        tok.save(out)
        save_codebook_grid(tok.centroids, t.patch_size, channels, str(out / "centroids.png"),
                           counts=ids.bincount(minlength=t.k))
        path = metrics_file("tokenizer", "tokenizer")
        write_text(str(path), json.dumps(metrics, indent=2) + "\n")
        tracker.log_metrics({f"tokenizer/{k}": v for k, v in metrics.items()})
        for f in (out / "centroids.png", out / "tokenizer.json", path):
            tracker.log_artifact(f)
    log.info("tokenizer: k=%d built in %.1f s, inertia %.4g; held-out usage %.1f%%, perplexity %.0f -> %s", t.k,
             metrics["build_s"], metrics["inertia"], 100 * metrics["heldout_usage"], metrics["heldout_perplexity"],
             out)
    return metrics
