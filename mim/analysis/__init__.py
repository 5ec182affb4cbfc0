"""Pictures and analyses of runs: loss curves, reconstructions and masks."""

from mim.analysis.diversity import diversity_summary, token_diversity
from mim.analysis.plots import plot_loss_curve, save_codebook_grid, save_reconstruction_grid

__all__ = ["diversity_summary", "plot_loss_curve", "save_codebook_grid", "save_reconstruction_grid", "token_diversity"]
