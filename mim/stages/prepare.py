"""`mim prepare`: read the data source named in `params/data.yaml` once and write it to `data/prepared/`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mim.data.prepared import save_prepared
from mim.io import write_text
from mim.params import DataParams, load_params
from mim.params.bind.data import load_split, train_images
from mim.project.layout import PREPARED, metrics_file
from mim.tracking import StageRun

log = logging.getLogger("mim.prepare")


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Load the train split (seeded subset if `subset`) and the eval split; write them and a manifest."""
    d = load_params(DataParams, Path(params_dir) / "data.yaml", overrides)
    with StageRun("prepare") as tracker:
        tracker.log_params(d.model_dump(mode="json"))
        train, test = train_images(d), load_split(d, d.eval_split)
        manifest = save_prepared(PREPARED, {"train": train, "test": test}, extra={"source": d.source})
        stats = {name: {"count": s["count"], "digest": s["digest"]} for name, s in manifest["splits"].items()}
        write_text(str(metrics_file("prepare", "data")), json.dumps(stats, indent=2) + "\n")
        for name, s in manifest["splits"].items():
            tracker.log_dataset(f"{d.source}:{name}", d.source, s["digest"], context=name)
        tracker.log_metrics({"data/train_count": len(train), "data/test_count": len(test)})
        tracker.log_artifact(PREPARED / "manifest.json")
    log.info("prepared %s: %d train / %d test images %s -> %s", d.source, len(train), len(test),
             list(train.images.shape[1:]), PREPARED)
    return manifest
