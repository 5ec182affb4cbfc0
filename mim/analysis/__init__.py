"""Pictures and analyses of runs: loss curves, reconstructions, masks, codebooks, token diversity, feature maps."""

from mim.analysis.diversity import diversity_by_level, diversity_summary, token_diversity
from mim.analysis.features import feature_maps
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

__all__ = ["diversity_by_level", "diversity_summary", "feature_maps", "plot_loss_curve", "save_bar_chart",
           "save_codebook_grid", "save_grouped_bars", "save_image_rows", "save_level_curves",
           "save_reconstruction_grid", "save_scatter", "token_diversity"]
