"""`mim prepare`: read the data source named in `params/data.yaml` once and write it to `data/prepared/`, each
split as a memory-mapped array or as streaming shards (`storage`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mim.io import write_text
from mim.params import DataParams, load_params
from mim.params.bind.data import prepare
from mim.project.layout import PREPARED, metrics_file
from mim.tracking import StageRun

log = logging.getLogger("mim.prepare")


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Write the train split (seeded subset if `subset`) and the eval split, and a manifest."""
    d = load_params(DataParams, Path(params_dir) / "data.yaml", overrides)
    with StageRun("prepare") as tracker:
        tracker.log_params(d.model_dump(mode="json"))
        manifest = prepare(d, str(PREPARED))
        stored = {name: s for name, s in manifest["splits"].items() if "alias" not in s}  # an alias names another
        stats = {name: {"count": s["count"], "digest": s["digest"], "form": s["form"],
                        "skipped": s["skipped"]["count"]} for name, s in stored.items()}
        write_text(str(metrics_file("prepare", "data")), json.dumps(stats, indent=2) + "\n")
        for name, s in stored.items():
            tracker.log_dataset(f"{s['source']}:{name}", s["source"], s["digest"], context=name)
            if s["skipped"]["count"]:
                tracker.set_tags({f"data.{name}.skipped": ", ".join(s["skipped"]["files"][:20])[:4000]})
        tracker.log_metrics({f"data/{name}_{key}": stats[name][key] for name in stats for key in ("count", "skipped")})
        tracker.log_artifact(PREPARED / "manifest.json")
    for name, s in stored.items():
        log.info("prepared %s: %d images from %s as %s%s", name, s["count"], s["source"], s["form"],
                 f", {s['skipped']['count']} skipped (named in {PREPARED}/manifest.json)" if s["skipped"]["count"]
                 else "")
    return manifest
