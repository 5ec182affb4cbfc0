"""PNG pictures of a run: the loss curve and a reconstruction grid (original / corrupted / predicted)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mim.io import atomic_write, atomic_write_bytes  # noqa: E402


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


def reconstruction_figure(panels: dict[str, torch.Tensor], mean: tuple[float, ...], std: tuple[float, ...], *,
                          caption: str = "", title: str = "", row_labels: list[str] | None = None) -> plt.Figure:
    """One row per image, one column per named panel ([B, C, H, W], normalized by `mean`/`std`: e.g. input,
    masked, prediction, composite); `caption` goes under the grid, `title` above it, `row_labels` (e.g. file
    names) left of the rows. Drawn as one canvas (one axes), which keeps it fast enough to draw while training."""
    shown = [_to_display(imgs, mean, std) for imgs in panels.values()]  # each [B, H, W, C]
    n, h, w, c = shown[0].shape
    gap = max(1, h // 16)
    canvas = np.ones((n * (h + gap) - gap, len(shown) * (w + gap) - gap, 3), dtype=np.float32)
    for col, imgs in enumerate(shown):
        for row in range(n):
            tile = imgs[row] if imgs.shape[-1] == 3 else np.repeat(imgs[row], 3, axis=-1)
            canvas[row * (h + gap) : row * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = tile
    fig, ax = plt.subplots(figsize=(1.6 * len(shown) + (0.8 if row_labels else 0), 1.6 * n))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([col * (w + gap) + w / 2 for col in range(len(shown))], list(panels), fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks([row * (h + gap) + h / 2 for row in range(n)], row_labels or [""] * n, fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    if caption:
        fig.text(0.5, 0.0, caption, ha="center", va="top", fontsize=7, wrap=True)
    return fig


def save_reconstruction_grid(originals: torch.Tensor, panels: dict[str, torch.Tensor], url: str,
                             mean: tuple[float, ...], std: tuple[float, ...], caption: str = "") -> None:
    """One row per image: the original, then each named panel (e.g. input with mask, prediction)."""
    _save(reconstruction_figure({"original": originals, **panels}, mean, std, caption=caption), url)


def figure_png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (deterministic, like `_save`); the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_png(data: bytes, url: str) -> None:
    """Write PNG bytes (from `figure_png`) to `url` atomically."""
    atomic_write_bytes(url, data)


def attention_figure(images: torch.Tensor, maps: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], *,
                     title: str = "") -> plt.Figure:
    """One row per image: the image, then one attention map per head ([B, heads, H, W], each map scaled to its
    own maximum) laid over a faded copy of the image."""
    shown = _to_display(images, mean, std)
    grey = shown.mean(-1)  # [B, H, W]
    b, heads = maps.shape[:2]
    fig, axes = plt.subplots(b, heads + 1, figsize=(1.5 * (heads + 1), 1.5 * b), squeeze=False)
    m = maps.cpu().float()
    m = (m / m.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]).numpy()
    for row in range(b):
        axes[row][0].imshow(shown[row].squeeze(-1) if shown.shape[-1] == 1 else shown[row], cmap="gray")
        for h in range(heads):
            ax = axes[row][h + 1]
            ax.imshow(grey[row], cmap="gray", vmin=0, vmax=1)
            ax.imshow(m[row, h], cmap="inferno", vmin=0, vmax=1, alpha=0.7)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("image" if col == 0 else f"head {col - 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


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
                   errors: dict[str, float] | None = None, groups: dict[str, str] | None = None) -> None:
    """One bar per label (with an error bar where `errors` has one), values written above the bars; with
    `groups` (label -> group), bars are coloured by group and a legend names the groups."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1), 3.5))
    err = [errors.get(k, 0.0) for k in labels] if errors else None
    palette = {g: f"C{i}" for i, g in enumerate(dict.fromkeys((groups or {}).values()))}
    colors = [palette[groups[k]] if groups and k in groups else "tab:blue" for k in labels]
    bars = ax.bar(labels, [values[k] for k in labels], yerr=err, capsize=3, color=colors, alpha=0.8)
    if palette:
        ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.8) for c in palette.values()],
                  labels=list(palette), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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


def save_grouped_bars(values: dict[str, dict[str, float]], url: str, *, title: str, ylabel: str,
                      errors: dict[str, dict[str, float]] | None = None) -> None:
    """One group of bars per label (e.g. a method), one bar per series (e.g. k-NN, linear, fine-tune); a missing
    value leaves a gap; `errors` ({label: {series: half-width}}) draws an error bar where it has one."""
    errors = errors or {}
    labels = list(values)
    series = list(dict.fromkeys(k for v in values.values() for k in v))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    xs = np.arange(len(labels))
    for i, name in enumerate(series):
        ys = [values[label].get(name, np.nan) for label in labels]
        yerr = [errors.get(label, {}).get(name, 0.0) for label in labels]
        ax.bar(xs + (i - (len(series) - 1) / 2) * width, ys, width, label=name,
               yerr=yerr if any(yerr) else None, capsize=2)
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
