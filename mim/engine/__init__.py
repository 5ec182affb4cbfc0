"""The training loop and what it needs: settings (`config`), the trainer, checkpoints, optimizer and schedule,
precision and devices, DDP under torchrun, progress lines. No params: callers pass `TrainConfig`."""
