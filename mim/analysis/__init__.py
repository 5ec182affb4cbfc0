"""Pictures and analyses of runs: loss curves, reconstructions, masks, codebooks, token diversity."""

from mim.analysis.diversity import diversity_by_level, diversity_summary, token_diversity
from mim.analysis.plots import (
    plot_loss_curve,
    save_bar_chart,
    save_codebook_grid,
    save_grouped_bars,
    save_image_rows,
    save_level_curves,
    save_reconstruction_grid,
    save_scatter,
)

__all__ = ["diversity_by_level", "diversity_summary", "plot_loss_curve", "save_bar_chart", "save_codebook_grid",
           "save_grouped_bars", "save_image_rows", "save_level_curves", "save_reconstruction_grid", "save_scatter",
           "token_diversity"]
