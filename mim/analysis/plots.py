"""PNG pictures of a run: the loss curve and a reconstruction grid (original / corrupted / predicted)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mim.io import atomic_write  # noqa: E402


def _save(fig: plt.Figure, url: str) -> None:
    """Stream the PNG into the file atomically; the figure is closed even when the write fails (a full disk).
    Agg writes no time stamp, so identical figures give identical bytes."""
    try:
        atomic_write(url, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_loss_curve(history: dict[str, list[float]], url: str, title: str = "pre-training loss") -> None:
    """Loss (left axis) and learning rate (right axis) against the optimizer step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["step"], history["loss"], color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(history["step"], history["lr"], color="tab:orange", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(title)
    _save(fig, url)


def _to_display(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalized [B, C, H, W] -> [B, H, W, C] in [0, 1] for imshow."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x.cpu().float() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def save_reconstruction_grid(originals: torch.Tensor, panels: dict[str, torch.Tensor], url: str,
                             mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """One row per image: the original, then each named panel (e.g. input with mask, prediction)."""
    rows = [("original", originals), *panels.items()]
    n = originals.shape[0]
    fig, axes = plt.subplots(n, len(rows), figsize=(1.6 * len(rows), 1.6 * n), squeeze=False)
    for col, (name, imgs) in enumerate(rows):
        shown = _to_display(imgs, mean, std)
        for row in range(n):
            ax = axes[row][col]
            ax.imshow(shown[row].squeeze(-1) if shown.shape[-1] == 1 else shown[row], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    _save(fig, url)


def save_codebook_grid(centroids: torch.Tensor, patch_size: int, channels: int, url: str,
                       counts: torch.Tensor | None = None, show: int = 256) -> None:
    """The most used `show` centroids (all when `counts` is None: the first ones) as image patches."""
    order = counts.argsort(descending=True) if counts is not None else torch.arange(len(centroids))
    chosen = centroids[order[:show]].float().clamp(0, 1)  # [S, C*p*p] in (c, py, px) order
    p, cols = patch_size, int(np.ceil(np.sqrt(len(chosen))))
    rows = int(np.ceil(len(chosen) / cols))
    tiles = chosen.reshape(-1, channels, p, p).permute(0, 2, 3, 1).numpy()  # [S, p, p, C]
    canvas = np.ones((rows * (p + 1) + 1, cols * (p + 1) + 1, channels), dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[1 + r * (p + 1) : 1 + r * (p + 1) + p, 1 + c * (p + 1) : 1 + c * (p + 1) + p] = tile
    fig, ax = plt.subplots(figsize=(6, 6 * rows / cols))
    ax.imshow(canvas.squeeze(-1) if channels == 1 else canvas, cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{len(chosen)} of {len(centroids)} centroids" + (", most used first" if counts is not None else ""))
    _save(fig, url)


def save_bar_chart(values: dict[str, float], url: str, *, title: str, ylabel: str,
                   errors: dict[str, float] | None = None) -> None:
    """One bar per label (with an error bar where `errors` has one), values written above the bars."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1), 3.5))
    err = [errors.get(k, 0.0) for k in labels] if errors else None
    bars = ax.bar(labels, [values[k] for k in labels], yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelrotation=20)
    _save(fig, url)


def save_level_curves(curves: dict[str, list[float]], url: str, *, title: str, ylabel: str) -> None:
    """One line per label over its levels, on a shared relative-depth axis (0 = first level, 1 = last), so
    models with different numbers of stages or blocks compare."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, ys in curves.items():
        xs = np.linspace(0, 1, len(ys)) if len(ys) > 1 else np.zeros(1)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("relative depth of the feature level (0 = first, 1 = last)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, url)


def save_grouped_bars(values: dict[str, dict[str, float]], url: str, *, title: str, ylabel: str) -> None:
    """One group of bars per label (e.g. a method), one bar per series (e.g. k-NN, linear, fine-tune); a missing
    value leaves a gap."""
    labels = list(values)
    series = list(dict.fromkeys(k for v in values.values() for k in v))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    xs = np.arange(len(labels))
    for i, name in enumerate(series):
        ys = [values[label].get(name, np.nan) for label in labels]
        ax.bar(xs + (i - (len(series) - 1) / 2) * width, ys, width, label=name)
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    finite = [v for d in values.values() for v in d.values() if np.isfinite(v)]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, url)


def save_scatter(points: dict[str, tuple[float, float]], url: str, *, title: str, xlabel: str, ylabel: str) -> None:
    """Labelled points (e.g. accuracy against pre-training time per method)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in points.items():
        ax.scatter([x], [y])
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, url)


def save_image_rows(rows: dict[str, torch.Tensor], url: str, *, title: str) -> None:
    """One row per label of [K, 3, h, w] pictures in [0, 1] (e.g. feature maps of several encoders)."""
    n = max(v.shape[0] for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.4 * n + 1.2, 1.4 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < imgs.shape[0]:
                ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    _save(fig, url)
