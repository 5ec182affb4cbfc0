"""`mim report`: every recipe of params/pipeline.yaml side by side, the way the papers' tables do: encoder, size,
pre-training cost, k-NN, linear probe, fine-tuning (and any other `<protocol>_top1` score the stages write), token
diversity, with the random-init, scratch and raw-pixel baselines. Each score is the mean over the pipeline's seeds
with its 95 % t interval (`mim.analysis.stats`), and each method's paired difference to its random-init twin (same
seed, same architecture) says whether pre-training helped beyond the seed-to-seed noise.
Writes `reports/comparison.md`, `reports/accuracy.png` (means with interval bars), `reports/accuracy_vs_time.png`,
`reports/features.png` (feature PCA maps of every encoder of the first seed on the same held-out images, shown above
them) and copies of each method's reconstruction grid (first seed; the same held-out images for every method); logs
them to MLflow (under the pipeline's parent run when a flow runs it). A method that has not run yet is listed as
`not run`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mim.analysis import save_grouped_bars, save_image_rows, save_scatter
from mim.analysis.features import feature_maps
from mim.analysis.stats import mean_interval
from mim.data.prepared import load_prepared
from mim.io import write_text
from mim.models.encoder import Encoder
from mim.models.export import load_encoder
from mim.params import PipelineParams, load_with_data
from mim.params.bind.data import augment
from mim.project.graph import declared_stages, pipeline
from mim.project.layout import PARAMS_FILE, PREPARED, encoder_file, model_dir, plots_dir, stage_name
from mim.project.results import (
    accuracy_keys,
    architecture,
    baselines,
    difference_cell,
    estimate_cell,
    read_json,
    recipe_scores,
    seed_metrics,
    twin_of,
    twin_scores,
)
from mim.tracking import StageRun, latest_run_ids
from mim.tracking.timings import PARTS, TIMINGS_DIR, read_timings

REPORTS = Path("reports")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger("mim")
DIVERSITY_REBUILD = "re-run `dvc repro diversity`"
PROTOCOLS = {"knn_top1": "k-NN", "linear_top1": "linear", "finetune_top1": "fine-tune"}


def label(key: str) -> str:
    """A column's name: k-NN, linear, fine-tune, else the protocol of `<protocol>_top1` (`linear_1pct`)."""
    return PROTOCOLS.get(key, key.removesuffix("_top1"))


def values(scores: dict[Any, dict[str, Any]], key: str) -> dict[Any, float]:
    """{seed: scores[seed][key]} for the seeds that have `key`."""
    return {s: m[key] for s, m in scores.items() if key in m}


def gather(root: Path, pipe: PipelineParams, params_dir: str | Path, scratch_of: str | None) -> list[dict[str, Any]]:
    """One row per recipe: whatever its stages have written so far, per seed, and its random-init twin's scores
    (the baseline of the same architecture; the scratch fine-tune when the architecture is `scratch_of`'s)."""
    diversity = read_json(root / "metrics/diversity.json", DIVERSITY_REBUILD)
    seeds = pipe.seeds
    twins = {b: architecture(root, b, seeds, params_dir) for b in pipe.baselines}
    scratch_arch = architecture(root, scratch_of, seeds, params_dir) if scratch_of else None
    rows = []
    for m in pipe.methods:
        meta: dict[str, Any] = {}
        first = next((s for s in seeds if (root / model_dir(m, s) / PARAMS_FILE).is_file()), None)
        if first is not None:
            params = read_json(root / model_dir(m, first) / PARAMS_FILE,
                               f"re-run `dvc repro {stage_name('pretrain', m, first)}`")
            model = params["model"]
            meta["encoder"] = {"vit": f"ViT-{model.get('size')}/{model.get('patch_size')}",
                               "cnn": model.get("name"), "hier": f"hier-{model.get('size')}"}[model.get("arch", "vit")]
            meta["method"] = params["method"]["name"]
        if exported := next((root / encoder_file(m, s) for s in seeds if (root / encoder_file(m, s)).is_file()), None):
            meta["params_m"] = sum(p.numel() for p in load_encoder(str(exported)).parameters()) / 1e6
        arch = architecture(root, m, seeds, params_dir)
        twin, scratch = twin_of(m, arch, twins), arch == scratch_arch and bool(pipe.transfer_seeds)  # fine-tuned
        rows.append({"name": m, **meta, "pretrain": seed_metrics(root, "pretrain", m, seeds),
                     "scores": recipe_scores(root, m, seeds, pipe.transfer_seeds), "twin": twin, "scratch": scratch,
                     "twin_scores": twin_scores(root, twin, seeds, pipe.transfer_seeds if scratch else []),
                     "td": diversity.get(f"{m}-encoder", {}).get("token_diversity")})
    return rows


def _seeds_cell(n: int) -> str:
    return "1 seed, no interval" if n == 1 else str(n)


def _difference_cells(scores: dict, other: dict, keys: list[str]) -> str:
    """`cell | cell | ` of the paired differences scores - other, one per accuracy key."""
    return "".join(f"{difference_cell(values(scores, k), values(other, k))} | " for k in keys)


def render(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], run_ids: dict[str, str],
           teachers: dict[str, Any], seeds: list[int], reference: str | None = None) -> str:
    """The markdown report: the comparison table (mean ± 95 % interval over seeds), each method's paired difference
    to its random-init twin and (with `reference`, a recipe among `rows`) to the reference recipe, the baselines,
    teachers' token diversity and the pictures."""
    keys = accuracy_keys([m for r in [*rows, *base_rows] for m in (*r["scores"].values(),
                                                                    *r.get("twin_scores", {}).values())])
    interval = ("one seed: no interval (the `bench-cpu` params set runs 3)" if len(seeds) == 1 else
                f"mean ± half-width of the 95 % t interval over {len(seeds)} seeds")
    lines = ["# Method comparison", "",
             "Same data, same evaluation protocol, each method at its default budget (`params/<method>.yaml`), seeds "
             f"{', '.join(map(str, seeds))} (`params/pipeline.yaml`). Accuracies are top-1 % on the test split "
             f"({interval}); k-NN and linear probe on frozen features, fine-tune end to end.", "",
             "| method | encoder | params (M) | seeds | pre-train s | img/s | "
             + "".join(f"{label(k)} | " for k in keys) + "TD | MLflow run |",
             "|---|---|---:|---|---:|---:|" + "---:|" * len(keys) + "---:|---|"]
    for r in rows:
        t, n = r["pretrain"], len(set(r["pretrain"]) | set(r["scores"]))
        cost = (f"{estimate_cell([m['wall_time_s'] for m in t.values()], n, 0)} | "
                f"{estimate_cell([m['images_per_s'] for m in t.values()], n, 0)}") if t else "not run | -"
        size = f"{r['params_m']:.2f}" if "params_m" in r else "-"
        td = f"{r['td']:.3f}" if r.get("td") is not None else "-"
        name = r["name"] if r.get("method", r["name"]) == r["name"] else f"{r['name']} ({r['method']})"
        runs = " ".join(run_ids[k] for s in seeds if (k := stage_name("pretrain", r["name"], s)) in run_ids) or "-"
        cells = "".join(f"{estimate_cell(values(r['scores'], k).values(), n)} | " for k in keys)
        lines.append(f"| {name} | {r.get('encoder', '-')} | {size} | {_seeds_cell(n) if n else '-'} | {cost} | "
                     f"{cells}{td} | {runs} |")
    for b in base_rows:  # fine-tuned only for `scratch_of`'s architecture (the scratch stage): "-" elsewhere
        n = len(b["scores"])
        cells = "".join(f"{estimate_cell(v.values(), n) if (v := values(b['scores'], k)) else '-'} | " for k in keys)
        lines.append(f"| {b['name']} (baseline) | - | - | {_seeds_cell(n) if n else '-'} | - | - | {cells}- | - |")
    lines += ["", "## Pre-training minus random init, paired by seed", "",
              "Each cell: the mean over seeds of (method - its random-init twin of the same architecture and seed), "
              "in points, with its 95 % t interval; `n.s.` = the interval contains 0, not significant at this "
              "number of seeds. The twin is `baseline@<recipe>-<seed>` for frozen features, `scratch@<seed>` "
              "(transfer.yaml's scratch_of) for fine-tuning.", "",
              ("| method | twin | " + "".join(f"{label(k)} | " for k in keys)).rstrip(),
              "|---|---|" + "---:|" * len(keys)]
    for r in rows:
        twin = " + ".join([*([f"random-init {r['twin']}"] if r["twin"] else []),
                           *(["scratch"] if r["scratch"] else [])])
        if not twin:
            lines.append((f"| {r['name']} | none: add a recipe of its architecture to `baselines` in "
                          "params/pipeline.yaml | " + "- | " * len(keys)).rstrip())
            continue
        lines.append(f"| {r['name']} | {twin} | {_difference_cells(r['scores'], r['twin_scores'], keys)}".rstrip())
    if (ref := next((r for r in rows if r["name"] == reference), None)) and len(rows) > 1:
        lines += ["", f"## Each method minus {reference}, paired by seed", "",
                  f"Each cell: the mean over seeds of (method - {reference} at the same seed), in points, with its "
                  f"95 % t interval; `n.s.` = the interval contains 0. The claims the papers make against "
                  f"{reference} (\"outperforms MAE\") read here, at this budget; encoders of another architecture are "
                  "compared as they are.", "",
                  ("| method | " + "".join(f"{label(k)} | " for k in keys)).rstrip(), "|---|" + "---:|" * len(keys)]
        lines += [f"| {r['name']} | {_difference_cells(r['scores'], ref['scores'], keys)}".rstrip()
                  for r in rows if r is not ref]
    if teachers:
        lines += ["", "## Token diversity of teachers and encoders", "", "| model | TD (mean +- std) | level |",
                  "|---|---:|---:|"]
        lines += [f"| {k} | {v['token_diversity']:.3f} +- {v['token_diversity_std']:.3f} | {v['level']} |"
                  for k, v in teachers.items()]
    lines += ["", "## Pictures", "", "![accuracy per method (mean, 95 % interval bars)](accuracy.png)", "",
              "![k-NN accuracy against pre-training time](accuracy_vs_time.png)", "",
              f"Feature maps (seed {seeds[0]}'s encoders; last-layer tokens projected on their top-3 principal "
              "components, the same held-out images for every encoder, shown in the first row):", "",
              "![feature PCA maps](features.png)", ""]
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


def exported_encoders(root: Path, methods: list[str], seed: int, img_size: int) -> Iterator[tuple[str, Encoder]]:
    """(method, encoder in eval mode at `img_size`) for each method that has exported one at `seed`, loaded one at
    a time."""
    for m in methods:
        path = root / encoder_file(m, seed)
        if path.is_file():
            yield m, load_encoder(str(path), img_size=img_size).eval()


def copy_reconstructions(root: Path, methods: list[str], seed: int) -> None:
    """`reports/reconstructions/<method>.png` from each method's current grid at `seed`, and nothing else: a copy
    whose source is gone (or is not a PNG) is not shown as current."""
    folder = REPORTS / "reconstructions"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for m in methods:
        src = root / plots_dir("pretrain", m, seed) / "reconstructions.png"
        if not src.is_file():
            continue
        with src.open("rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                log.warning("%s is not a PNG picture: left out of the report (re-run `dvc repro %s`)", src,
                            stage_name("pretrain", m, seed))
                continue
        shutil.copy2(src, folder / f"{m}.png")


def chart_values(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]]
                 ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """({label: {protocol: mean}}, {label: {protocol: interval half-width}}) of every row, for the bar chart."""
    keys = accuracy_keys([m for r in [*rows, *base_rows] for m in r["scores"].values()])
    means: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for r in [*rows, *base_rows]:
        for k in keys:
            if v := list(values(r["scores"], k).values()):
                e = mean_interval(v)
                means.setdefault(r["name"], {})[label(k)] = e.mean
                if e.half_width is not None:
                    errors.setdefault(r["name"], {})[label(k)] = e.half_width
    return means, errors


def run(params_dir: str | Path, root: Path | None = None) -> str:
    root = Path(root or ".")
    transfer, data = load_with_data(params_dir, "transfer")
    pipe = pipeline(root)
    methods, first = list(pipe.methods), pipe.seeds[0]
    rows = gather(root, pipe, params_dir, transfer.scratch_of)
    copy_reconstructions(root, methods, first)
    base_rows = baselines(root, pipe, transfer.scratch_of)
    with StageRun("report") as tracker:
        run_ids = latest_run_ids([stage_name("pretrain", m, s) for m in methods for s in pipe.seeds])
        teachers = read_json(root / "metrics/diversity.json", DIVERSITY_REBUILD)
        means, errors = chart_values(rows, base_rows)
        save_grouped_bars(means, str(REPORTS / "accuracy.png"), errors=errors,
                          title="top-1 accuracy per method (bars: 95 % interval over seeds)", ylabel="top-1 %")
        points = {}
        for r in rows:
            knn = values(r["scores"], "knn_top1")
            if r["pretrain"] and knn:
                points[r["name"]] = (mean_interval([m["wall_time_s"] for m in r["pretrain"].values()]).mean,
                                     mean_interval(list(knn.values())).mean)
        save_scatter(points, str(REPORTS / "accuracy_vs_time.png"), title="k-NN accuracy against pre-training time",
                     xlabel="pre-training wall-clock (s, mean over seeds)", ylabel="k-NN top-1 %")
        test = load_prepared(root / PREPARED, "test", limit=6).images if (root / PREPARED).is_dir() else None
        if test is not None:
            aug = augment(data)
            images = aug.eval(test)
            maps = feature_maps(exported_encoders(root, methods, first, images.shape[-1]), images)
            if maps:  # the input images first, so a reader sees which image each column is
                shown = aug.denormalize(images).clamp(0, 1).expand(-1, 3, -1, -1)
                save_image_rows({"input": shown, **maps}, str(REPORTS / "features.png"),
                                title=f"last-layer feature PCA maps, seed {first} (first row: the input images)")
        text = render(rows, base_rows, run_ids, teachers, pipe.seeds, pipe.reference_recipe)
        declared = declared_stages(root) if (root / "dvc.yaml").is_file() else None
        text += timings_section({stage: t for stage, t in read_timings(root / TIMINGS_DIR).items()
                                 if declared is None or stage in declared})
        write_text(str(REPORTS / "comparison.md"), text)
        for f in sorted(REPORTS.rglob("*")):
            if f.is_file():
                tracker.log_artifact(f, "report" + ("/reconstructions" if f.parent.name == "reconstructions" else ""))
        tracker.log_metrics({f"report/{name}/{protocol}": mean for name, row in means.items()
                             for protocol, mean in row.items()})
    return text
