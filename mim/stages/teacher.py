"""`mim teacher`: resolve and verify the teacher of `params/teacher.yaml`, write `models/teacher/manifest.json`
(source, weights digest, level, feature dim, grid) and `metrics/teacher/teacher.json` (token diversity)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mim.analysis import diversity_summary, token_diversity
from mim.data.prepared import load_prepared
from mim.io import write_text
from mim.params import load_with_data
from mim.params.bind.data import augment, check_prepared
from mim.params.bind.targets import teacher_source
from mim.progress import Progress
from mim.project.graph import require_dep
from mim.project.layout import PREPARED, metrics_file, model_dir
from mim.targets.teacher import Teacher, teacher_manifest
from mim.tracking import StageRun


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    t, d = load_with_data(params_dir, "teacher", overrides)
    if t.weights not in (None, "package", "random"):
        require_dep(Path("."), "teacher", t.weights, "teacher weights")
    check_prepared(d, PREPARED, Path(params_dir) / "data.yaml")
    grid = d.token_grid(t.patch_size, "teacher.patch_size")
    source = teacher_source(t)
    with StageRun("teacher", tags={"teacher.source": source.source}) as tracker:
        transform = augment(d)
        teacher, digest = Teacher.from_spec(source, grid, transform.mean, transform.std)
        tracker.set_tags({"teacher.digest": digest})
        tracker.log_params({"teacher": t.model_dump(mode="json")})
        images = transform.eval(load_prepared(PREPARED, "test", limit=t.check_images).images)
        parts = []
        with Progress(len(images), "teacher features (held-out check)", "images", logger="mim.teacher") as progress:
            for part in images.split(64):
                parts.append(teacher(part))
                progress.update(len(part))
        feats = torch.cat(parts)  # [B, N, C]
        if not torch.isfinite(feats).all():
            raise ValueError(f"teacher {source.source}: non-finite features on held-out images")
        diversity = diversity_summary(token_diversity(feats))
        manifest = teacher_manifest(source, teacher, digest)
        out = model_dir("teacher")
        write_text(str(out / "manifest.json"), json.dumps(manifest, indent=2) + "\n")
        metrics = {"token_diversity": diversity["mean"], "token_diversity_std": diversity["std"],
                   "feature_dim": feats.shape[-1]}
        write_text(str(metrics_file("teacher", "teacher")), json.dumps(metrics, indent=2) + "\n")
        tracker.log_metrics({f"teacher/{k}": v for k, v in metrics.items()})
        tracker.log_artifact(out / "manifest.json")
    return manifest
