"""Where a pre-training run writes: the pipeline stage's layout and a one-off run's folder."""

from __future__ import annotations

from mim.engine.files import PretrainFiles
from mim.project.layout import ENCODER_FILE, MODEL_FILE, encoder_file, metrics_file, model_dir, plots_dir


def stage_files(recipe: str, seed: int, checkpoint: str) -> PretrainFiles:
    """The pretrain stage's outputs for one seed: the encoder and the full model in `models/<recipe>/seed-<s>/`,
    the pictures and history DVC plots in `plots/pretrain/<recipe>/seed-<s>/`, the metrics in
    `metrics/pretrain/<recipe>/seed-<s>.json`."""
    plots = plots_dir("pretrain", recipe, seed)
    return PretrainFiles(checkpoint=checkpoint, encoder=str(encoder_file(recipe, seed)),
                         model=str(model_dir(recipe, seed) / MODEL_FILE), history=str(plots / "history.csv"),
                         parts=str(plots / "parts"),
                         metrics=str(metrics_file("pretrain", recipe, seed)), loss_plot=str(plots / "loss.png"),
                         reconstructions=str(plots / "reconstructions.png"))


def run_files(out: str) -> PretrainFiles:
    """A one-off run's folder (any fsspec URL): everything side by side, the checkpoint under `checkpoints/`."""
    out = out.rstrip("/")
    return PretrainFiles(checkpoint=f"{out}/checkpoints/last.pt", encoder=f"{out}/{ENCODER_FILE}",
                         model=f"{out}/{MODEL_FILE}", history=f"{out}/history.csv", parts=f"{out}/parts",
                         metrics=f"{out}/train_metrics.json",
                         loss_plot=f"{out}/loss.png", reconstructions=f"{out}/reconstructions.png")
