"""`mim teacher`: resolve and verify the teacher of `params/teacher.yaml`, write `models/teacher/manifest.json`
(source, weights digest, level, feature dim, grid) and `metrics/teacher/teacher.json` (token diversity)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mim.analysis import diversity_summary, token_diversity
from mim.data.prepared import load_prepared
from mim.engine.checkpoint import write_text
from mim.params import load_with_data
from mim.stages.layout import PREPARED, metrics_file, model_dir
from mim.targets.teacher import Teacher, build_timm_teacher
from mim.tracking import StageRun


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    t, d = load_with_data(params_dir, "teacher", overrides)
    grid = d.token_grid(t.patch_size, "teacher.patch_size")
    source = f"timm:{t.name}" + (f" weights={t.weights}" if t.weights else " (hub)")
    with StageRun("teacher", tags={"teacher.source": source}) as tracker:
        model, digest = build_timm_teacher(t.name, t.weights)
        tracker.set_tags({"teacher.digest": digest})
        tracker.log_params({"teacher": t.model_dump(mode="json")})
        augment = d.batch_augment()
        teacher = Teacher(model, t.level, grid, student_mean=augment.mean, student_std=augment.std,
                          input_size=t.input_size, token_norm=t.token_norm)
        images = augment.eval(load_prepared(PREPARED, "test").images[: t.check_images])
        feats = torch.cat([teacher(part) for part in images.split(64)])  # [B, N, C]
        if not torch.isfinite(feats).all():
            raise ValueError(f"teacher {source}: non-finite features on held-out images")
        diversity = diversity_summary(token_diversity(feats))
        manifest = {"source": source, "name": t.name, "weights": t.weights, "weights_digest": digest,
                    "level": t.level, "feature_dim": feats.shape[-1], "grid": list(grid),
                    "input_size": t.input_size, "token_norm": t.token_norm}
        out = model_dir("teacher")
        write_text(str(out / "manifest.json"), json.dumps(manifest, indent=2) + "\n")
        metrics = {"token_diversity": diversity["mean"], "token_diversity_std": diversity["std"],
                   "feature_dim": feats.shape[-1]}
        write_text(str(metrics_file("teacher", "teacher")), json.dumps(metrics, indent=2) + "\n")
        tracker.log_metrics({f"teacher/{k}": v for k, v in metrics.items()})
        tracker.log_artifact(out / "manifest.json")
    return manifest
