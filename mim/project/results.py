"""Reading what the stages wrote: each recipe's metrics files per seed, its random-init twin's, and the baseline
rows that `mim compare` and `mim report` show. A metrics file that exists is checked (a JSON object with its stage's
numbers), so a damaged one is an error naming the file and the stage that rewrites it, never a row shown as "not
run" or a crash while plotting."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mim.analysis.stats import Estimate, mean_interval, paired_difference
from mim.io import DamagedFileError, read_json_object
from mim.params import PipelineParams, load_pretrain
from mim.project.layout import PARAMS_FILE, metrics_file, model_dir, stage_name

__all__ = ["accuracy_keys", "architecture", "baselines", "estimate_cell", "difference_cell", "dvc_stage",
           "read_json", "read_metrics", "recipe_scores", "seed_metrics", "twin_of", "twin_scores"]

# the numbers `mim compare` and `mim report` show: those every file of a stage has, and those some have
REQUIRED = {"pretrain": ("wall_time_s", "images_per_s"), "evaluate": ("knn_top1", "linear_top1")}
NUMBERS = ("steps", "wall_time_s", "images_per_s", "knn_top1", "linear_top1", "finetune_top1", "token_diversity")
ACCURACY_SUFFIX = "_top1"  # every `<protocol>_top1` key of an evaluate or transfer file is an accuracy column
KNOWN_ORDER = ("knn_top1", "linear_top1", "finetune_top1")
Seed = int | None  # None: a stage without seeds (the raw pixels)


def read_json(path: Path, rebuild: str = "re-run the stage that writes it (dvc repro)") -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist (its stage has not run)."""
    return read_json_object(path, rebuild) if path.is_file() else {}


def dvc_stage(stage: str, name: str, seed: Seed = None) -> str:
    """The dvc.yaml stage that writes `metrics/<stage>/<name>[/seed-<s>].json` (`pretrain@mae-0`, `scratch@1`)."""
    if stage == "evaluate" and name.startswith("baseline-"):
        return stage_name("baseline", name.removeprefix("baseline-"), seed)
    if (stage, name) == ("evaluate", "pixels"):
        return "pixels"
    if (stage, name) == ("transfer", "scratch"):
        return stage_name("scratch", "scratch", seed)
    return stage_name(stage, name, seed)


def read_metrics(root: Path, stage: str, name: str, seed: Seed = None) -> dict[str, Any]:
    """`metrics/<stage>/<name>/seed-<seed>.json` (`<name>.json` for `seed` None) under `root`; {} when the stage has
    not run. A file that is not a JSON object, is empty, lacks its stage's numbers or holds a non-number there is a
    `DamagedFileError`."""
    path = root / metrics_file(stage, name, seed)
    rebuild = f"re-run `dvc repro {dvc_stage(stage, name, seed)}`"
    metrics = read_json(path, rebuild)
    if not path.is_file():
        return metrics
    if not metrics:
        raise DamagedFileError(f"{path}: empty (no metrics in it); {rebuild}")
    if missing := [k for k in REQUIRED.get(stage, ()) if k not in metrics]:
        raise DamagedFileError(f"{path}: incomplete (no {', '.join(missing)}); {rebuild}")
    for key, value in metrics.items():
        if (key in NUMBERS or key.endswith(ACCURACY_SUFFIX)) and (
                isinstance(value, bool) or not isinstance(value, int | float)):
            raise DamagedFileError(f"{path}: {key} is {value!r}, not a number; {rebuild}")
    return metrics


def seed_metrics(root: Path, stage: str, name: str, seeds: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{seed: metrics} for each of `seeds` whose stage has run."""
    return {s: m for s in seeds if (m := read_metrics(root, stage, name, s))}


def recipe_scores(root: Path, recipe: str, seeds: Iterable[int], transfer_seeds: Iterable[int]
                  ) -> dict[int, dict[str, Any]]:
    """{seed: every score of the recipe's evaluate stages and of its transfer stages at `transfer_seeds` (files
    of transfer stages the pipeline no longer declares are not read)}; the evaluate stage's k-NN and linear probe
    win over the same protocols run inside transfer."""
    seeds = list(seeds)
    evaluate = seed_metrics(root, "evaluate", recipe, seeds)
    transfer = seed_metrics(root, "transfer", recipe, set(seeds) & set(transfer_seeds))
    return {s: {**transfer.get(s, {}), **evaluate.get(s, {})} for s in seeds if s in evaluate or s in transfer}


def twin_scores(root: Path, baseline: str | None, seeds: Iterable[int], scratch_seeds: Iterable[int]
                ) -> dict[int, dict[str, Any]]:
    """{seed: scores of a random-init encoder}: `baseline@<baseline>-<s>` (frozen protocols) over `scratch@<s>`
    at `scratch_seeds` (fine-tuning: pass the pipeline's transfer_seeds when the architecture is transfer.yaml's
    scratch_of, else none)."""
    seeds = list(seeds)
    evaluate = seed_metrics(root, "evaluate", f"baseline-{baseline}", seeds) if baseline else {}
    finetuned = seed_metrics(root, "transfer", "scratch", set(seeds) & set(scratch_seeds))
    return {s: {**finetuned.get(s, {}), **evaluate.get(s, {})} for s in seeds if s in evaluate or s in finetuned}


def accuracy_keys(scores: Iterable[dict[str, Any]]) -> list[str]:
    """The accuracy columns present in any of `scores`: k-NN, linear, fine-tune first, then any other
    `<protocol>_top1` (a new protocol shows up with no edit here) in order of appearance."""
    seen = dict.fromkeys(k for d in scores for k in d if k.endswith(ACCURACY_SUFFIX))
    return [k for k in KNOWN_ORDER if k in seen] + [k for k in seen if k not in KNOWN_ORDER]


def architecture(root: Path, recipe: str, seeds: Iterable[int], params_dir: str | Path) -> dict[str, Any]:
    """The encoder architecture of `recipe`: its `model` params (less what does not change the architecture) from
    the first seed's `params.json` that exists, else from `params_dir/<recipe>.yaml`."""
    model = None
    for s in seeds:
        if (path := root / model_dir(recipe, s) / PARAMS_FILE).is_file():
            model = read_json(path, f"re-run `dvc repro {stage_name('pretrain', recipe, s)}`").get("model")
            break
    if model is None:
        model = load_pretrain(params_dir, recipe).model.model_dump(mode="json")
    return {k: v for k, v in model.items() if k not in ("init_from", "drop_path")}


def twin_of(recipe: str, arch: dict[str, Any], baseline_archs: dict[str, dict[str, Any]]) -> str | None:
    """The baseline recipe of the same encoder architecture as `recipe` (itself when it is one), None if none."""
    if recipe in baseline_archs:
        return recipe
    return next((b for b, a in baseline_archs.items() if a == arch), None)


def baselines(root: Path, pipeline: PipelineParams, scratch_of: str | None = None) -> list[dict[str, Any]]:
    """One row per baseline: each random-init encoder (`baseline@<recipe>-<seed>`, with the scratch fine-tune on
    the row of `scratch_of`'s architecture), then raw pixels; `scores` is {seed: metrics} (raw pixels: {None: ...})."""
    out = []
    for recipe in pipeline.baselines:
        out.append({"name": f"random-init {recipe} encoder", "recipe": recipe,
                    "scores": twin_scores(root, recipe, pipeline.seeds,
                                          pipeline.transfer_seeds if recipe == scratch_of else [])})
    if pixels := read_metrics(root, "evaluate", "pixels"):
        out.append({"name": "raw pixels", "recipe": None, "scores": {None: pixels}})
    return out


def estimate(values: Iterable[float]) -> Estimate | None:
    values = list(values)
    return mean_interval(values) if values else None


def estimate_cell(values: Iterable[float], seeds: int | None = None, digits: int = 2) -> str:
    """`88.12 ± 0.45` (mean ± half-width of the 95 % t interval over seeds), `88.12` for one value, `not run` for
    none; `(n=2)` when fewer values than the row's `seeds` are in."""
    e = estimate(values)
    if e is None:
        return "not run"
    text = f"{e.mean:.{digits}f}" + ("" if e.half_width is None else f" ± {e.half_width:.{digits}f}")
    return text + (f" (n={e.n})" if seeds is not None and e.n < seeds else "")


def difference_cell(values: dict[int, float], twin: dict[int, float]) -> str:
    """`+1.23 [+0.50, +1.96]` (mean paired difference and its 95 % interval), `n.s.` when the interval contains
    0; `+1.23 (1 seed, no interval)`; `-` when no seed has both."""
    d = paired_difference(values, twin)
    if d is None:
        return "-"
    if d.half_width is None:
        return f"{d.mean:+.2f} (1 seed, no interval)"
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" + ("" if d.significant else " n.s.")
