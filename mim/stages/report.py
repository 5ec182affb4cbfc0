"""`mim report`: every recipe of dvc.yaml side by side, the way the papers' tables do: encoder, size, pre-training
cost, k-NN, linear probe, fine-tuning, token diversity, with the random-init, scratch and raw-pixel baselines.
Writes `reports/comparison.md`, `reports/accuracy.png` (per method), `reports/accuracy_vs_time.png`,
`reports/features.png` (feature PCA maps of every encoder on the same held-out images, shown above them) and
copies of each method's reconstruction grid (the same held-out images for every method); logs them to MLflow (under the
pipeline's parent run when a flow runs it). A method that has not run yet is listed as `not run`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mim.analysis import save_grouped_bars, save_image_rows, save_scatter
from mim.analysis.features import feature_maps
from mim.data.prepared import load_prepared
from mim.io import write_text
from mim.models.encoder import Encoder
from mim.models.export import load_encoder
from mim.params import load_with_data
from mim.params.bind.data import augment
from mim.project.graph import pipeline_methods
from mim.project.layout import PARAMS_FILE, PREPARED, encoder_file, model_dir, plots_dir
from mim.project.results import baselines, read_json, read_metrics
from mim.tracking import StageRun, latest_run_ids
from mim.tracking.timings import PARTS, TIMINGS_DIR, read_timings

REPORTS = Path("reports")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger("mim")
DIVERSITY_REBUILD = "re-run `dvc repro diversity`"
PROTOCOLS = {"knn_top1": "k-NN", "linear_top1": "linear", "finetune_top1": "fine-tune"}


def _pct(m: dict, key: str) -> str:
    return f"{m[key]:.2f}" if key in m else "not run"


def gather(root: Path, methods: list[str]) -> list[dict[str, Any]]:
    """One row per method: whatever its stages have written so far."""
    diversity = read_json(root / "metrics/diversity.json", DIVERSITY_REBUILD)
    rows = []
    for m in methods:
        meta = {}
        params = read_json(root / model_dir(m) / PARAMS_FILE, f"re-run `dvc repro pretrain@{m}`")
        if params:
            model = params["model"]
            meta["encoder"] = {"vit": f"ViT-{model.get('size')}/{model.get('patch_size')}",
                               "cnn": model.get("name"), "hier": f"hier-{model.get('size')}"}[model.get("arch", "vit")]
            meta["method"] = params["method"]["name"]
        exported = root / encoder_file(m)
        if exported.is_file():
            meta["params_m"] = sum(p.numel() for p in load_encoder(str(exported)).parameters()) / 1e6
        td = diversity.get(f"{m}-encoder", {}).get("token_diversity")
        stages = {stage: read_metrics(root, stage, m) for stage in ("pretrain", "evaluate", "transfer")}
        rows.append({"name": m, **meta, **stages, "td": td})
    return rows


def render(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], run_ids: dict[str, str],
           teachers: dict[str, Any]) -> str:
    """The markdown report: the comparison table, baselines, teachers' token diversity and the pictures."""
    lines = ["# Method comparison", "",
             "Same data, same evaluation protocol, each method at its default budget (`params/<method>.yaml`). "
             "Accuracies are top-1 % on the test split; k-NN and linear probe on frozen features, fine-tune end to "
             "end.",
             "",
             "| method | encoder | params (M) | pre-train s | img/s | k-NN | linear | fine-tune | TD | MLflow run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        t = r["pretrain"]
        cost = f"{t['wall_time_s']:.0f} | {t['images_per_s']:.0f}" if t else "not run | -"
        size = f"{r['params_m']:.2f}" if "params_m" in r else "-"
        td = f"{r['td']:.3f}" if r.get("td") is not None else "-"
        label = r["name"] if r.get("method", r["name"]) == r["name"] else f"{r['name']} ({r['method']})"
        lines.append(f"| {label} | {r.get('encoder', '-')} | {size} | {cost} | {_pct(r['evaluate'], 'knn_top1')} | "
                     f"{_pct(r['evaluate'], 'linear_top1')} | {_pct(r['transfer'], 'finetune_top1')} | {td} | "
                     f"{run_ids.get('pretrain@' + r['name'], '-')} |")
    for b in base_rows:  # fine-tuned only for `scratch_of`'s architecture (the scratch stage): "-" elsewhere
        finetuned = f"{b['finetune_top1']:.2f}" if "finetune_top1" in b else "-"
        lines.append(f"| {b['name']} (baseline) | {b.get('encoder', '-')} | - | - | - | {_pct(b, 'knn_top1')} | "
                     f"{_pct(b, 'linear_top1')} | {finetuned} | - | - |")
    if teachers:
        lines += ["", "## Token diversity of teachers and encoders", "", "| model | TD (mean +- std) | level |",
                  "|---|---:|---:|"]
        lines += [f"| {k} | {v['token_diversity']:.3f} +- {v['token_diversity_std']:.3f} | {v['level']} |"
                  for k, v in teachers.items()]
    lines += ["", "## Pictures", "", "![accuracy per method](accuracy.png)", "",
              "![k-NN accuracy against pre-training time](accuracy_vs_time.png)", "",
              "Feature maps (last-layer tokens projected on their top-3 principal components, the same held-out "
              "images for every encoder, shown in the first row):", "", "![feature PCA maps](features.png)", ""]
    lines += [f"![{r['name']} reconstructions](reconstructions/{r['name']}.png)" for r in rows
              if (REPORTS / "reconstructions" / f"{r['name']}.png").is_file()]
    return "\n".join(lines) + "\n"


def timings_section(timings: dict[str, dict]) -> str:
    """The "per-stage seconds" section: each stage's last recorded run (`metrics/timings/<stage>.json`), split into
    start-up and imports, data, MLflow and compute, and the total; empty without any."""
    if not timings:
        return ""
    lines = ["", "## Per-stage seconds", "",
             "Each stage's last run (`metrics/timings/`): wall clock from the process's start, split into start-up "
             "and imports, opening the data, blocking MLflow calls and compute; CPU seconds of all its threads. "
             "dvc's own start-up per stage is not included (docs/benchmarks.md).", "",
             "| stage | wall s | start-up | data | MLflow | compute | CPU s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for stage, t in timings.items():
        parts = " | ".join(f"{t.get(p, 0.0):.1f}" for p in PARTS)
        lines.append(f"| {stage} | {t['wall_s']:.1f} | {parts} | {t.get('cpu_s', 0.0):.1f} |")
    total = {k: sum(t.get(k, 0.0) for t in timings.values()) for k in ("wall_s", *PARTS, "cpu_s")}
    lines.append(f"| total ({len(timings)} stages) | {total['wall_s']:.1f} | "
                 + " | ".join(f"{total[p]:.1f}" for p in PARTS) + f" | {total['cpu_s']:.1f} |")
    return "\n".join(lines) + "\n"


def exported_encoders(root: Path, methods: list[str], img_size: int) -> Iterator[tuple[str, Encoder]]:
    """(method, encoder in eval mode at `img_size`) for each method that has exported one, loaded one at a time."""
    for m in methods:
        path = root / encoder_file(m)
        if path.is_file():
            yield m, load_encoder(str(path), img_size=img_size).eval()


def copy_reconstructions(root: Path, methods: list[str]) -> None:
    """`reports/reconstructions/<method>.png` from each method's current grid, and nothing else: a copy whose
    source is gone (or is not a PNG) is not shown as current."""
    folder = REPORTS / "reconstructions"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for m in methods:
        src = root / plots_dir("pretrain", m) / "reconstructions.png"
        if not src.is_file():
            continue
        with src.open("rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                log.warning("%s is not a PNG picture: left out of the report (re-run `dvc repro pretrain@%s`)", src, m)
                continue
        shutil.copy2(src, folder / f"{m}.png")


def run(params_dir: str | Path, root: Path | None = None) -> str:
    root = Path(root or ".")
    transfer, data = load_with_data(params_dir, "transfer")
    methods = list(pipeline_methods(root))
    rows = gather(root, methods)
    copy_reconstructions(root, methods)
    base_rows = baselines(root, transfer.scratch_of)
    with StageRun("report") as tracker:
        run_ids = latest_run_ids([f"pretrain@{m}" for m in methods])
        teachers = read_json(root / "metrics/diversity.json", DIVERSITY_REBUILD)
        save_grouped_bars({r["name"]: {PROTOCOLS[k]: r[s][k] for s, k in (("evaluate", "knn_top1"),
                                                                           ("evaluate", "linear_top1"),
                                                                           ("transfer", "finetune_top1")) if k in r[s]}
                           for r in rows} | {b["name"]: {v: b[k] for k, v in PROTOCOLS.items() if k in b}
                                             for b in base_rows},
                          str(REPORTS / "accuracy.png"), title="top-1 accuracy per method", ylabel="top-1 %")
        save_scatter({r["name"]: (r["pretrain"]["wall_time_s"], r["evaluate"]["knn_top1"]) for r in rows
                      if r["pretrain"] and "knn_top1" in r["evaluate"]}, str(REPORTS / "accuracy_vs_time.png"),
                     title="k-NN accuracy against pre-training time", xlabel="pre-training wall-clock (s)",
                     ylabel="k-NN top-1 %")
        test = load_prepared(root / PREPARED, "test", limit=6).images if (root / PREPARED).is_dir() else None
        if test is not None:
            aug = augment(data)
            images = aug.eval(test)
            maps = feature_maps(exported_encoders(root, methods, images.shape[-1]), images)
            if maps:  # the input images first, so a reader sees which image each column is
                shown = aug.denormalize(images).clamp(0, 1).expand(-1, 3, -1, -1)
                save_image_rows({"input": shown, **maps}, str(REPORTS / "features.png"),
                                title="last-layer feature PCA maps (first row: the input images)")
        text = render(rows, base_rows, run_ids, teachers) + timings_section(read_timings(root / TIMINGS_DIR))
        write_text(str(REPORTS / "comparison.md"), text)
        for f in sorted(REPORTS.rglob("*")):
            if f.is_file():
                tracker.log_artifact(f, "report" + ("/reconstructions" if f.parent.name == "reconstructions" else ""))
        tracker.log_metrics({f"report/{r['name']}/{k}": r[s][k] for r in rows for s in ("evaluate", "transfer")
                             for k in PROTOCOLS if k in r[s]})
    return text
