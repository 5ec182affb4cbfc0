"""`mim diversity`: token diversity (Img2Vec's TD) of the teachers and encoders in `params/diversity.yaml`, at
every feature level, on the same held-out images: `metrics/diversity.json`, a bar chart (each model at its
configured level, coloured supervised / self-supervised / random) and a per-level line chart under
`plots/diversity/`."""

from __future__ import annotations

import json
from pathlib import Path

from mim.analysis import diversity_by_level, save_bar_chart, save_level_curves
from mim.data.prepared import load_prepared
from mim.io import write_text
from mim.params import load_with_data
from mim.params.bind.data import augment, check_prepared
from mim.params.bind.targets import teacher_source
from mim.project.graph import require_dep
from mim.project.layout import PREPARED
from mim.targets.teacher import Teacher
from mim.tracking import StageRun

METRICS = Path("metrics/diversity.json")
PLOTS = Path("plots/diversity")


def run(params_dir: str | Path, overrides: list[str] | None = None) -> dict:
    p, d = load_with_data(params_dir, "diversity", overrides)
    check_prepared(d, PREPARED, Path(params_dir) / "data.yaml")
    grid = d.token_grid(p.patch_size, "diversity.patch_size")
    transform = augment(d)
    images = transform.eval(load_prepared(PREPARED, "test", limit=p.images).images)
    for label, spec in p.models.items():
        if spec.weights not in (None, "package", "random"):
            require_dep(Path("."), "diversity", spec.weights, f"diversity model {label}: weights")
    results: dict[str, dict] = {}
    with StageRun("diversity") as tracker:
        tracker.log_params({"diversity": p.model_dump(mode="json")})
        for label, spec in p.models.items():
            source = teacher_source(spec)
            teacher, digest = Teacher.from_spec(source, grid, transform.mean, transform.std)
            levels = diversity_by_level(teacher.levels, images, p.batch_size)
            chosen = levels[spec.level]
            results[label] = {"token_diversity": chosen["mean"], "token_diversity_std": chosen["std"],
                              "level": spec.level, "supervision": spec.trained_by(), "source": source.source,
                              "weights_digest": digest, "per_level": {str(i): s["mean"] for i, s in enumerate(levels)}}
            curve = " ".join(f"{s['mean']:.3f}" for s in levels)
            print(f"diversity: {label:<16} TD {chosen['mean']:.3f} +- {chosen['std']:.3f} at level {spec.level} "
                  f"({spec.trained_by()}, {source.source}); per level {curve}", flush=True)
            tracker.log_metrics({f"diversity/{label}": chosen["mean"]})
        write_text(str(METRICS), json.dumps(results, indent=2) + "\n")
        PLOTS.mkdir(parents=True, exist_ok=True)
        save_bar_chart({k: v["token_diversity"] for k, v in results.items()}, str(PLOTS / "token_diversity.png"),
                       errors={k: v["token_diversity_std"] for k, v in results.items()},
                       groups={k: v["supervision"] for k, v in results.items()},
                       title=f"token diversity on {len(images)} held-out images", ylabel="TD (mean +- std)")
        save_level_curves({f"{k} ({v['supervision']})": list(v["per_level"].values()) for k, v in results.items()},
                          str(PLOTS / "token_diversity_levels.png"), title="token diversity per feature level",
                          ylabel="TD")
        for f in (METRICS, PLOTS / "token_diversity.png", PLOTS / "token_diversity_levels.png"):
            tracker.log_artifact(f)
    return results
