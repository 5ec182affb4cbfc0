"""Pictures and analyses of runs: loss curves, reconstructions and masks."""

from mim.analysis.plots import plot_loss_curve, save_codebook_grid, save_reconstruction_grid

__all__ = ["plot_loss_curve", "save_codebook_grid", "save_reconstruction_grid"]
