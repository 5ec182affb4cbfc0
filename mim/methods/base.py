"""What every pre-training method looks like to the engine."""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

import torch
from torch import nn

from mim.data.augment import BatchAugment

# the caption of a prediction that was trained in per-patch normalized units (MAE's norm_pix_loss)
NORM_PIX_NOTE = ("prediction de-normalized with the true patch mean/std (norm_pix_loss: the model predicts "
                 "per-patch normalized pixels)")


class StepOutput(TypedDict):
    """A method's forward result: the loss to back-propagate and named scalars to log."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


class Sliceable(Protocol):
    """A per-sample corruption (masks, views, ...) that can be cut to one rank's share of the batch."""

    def slice(self, start: int, stop: int) -> Any: ...

    def to(self, device: torch.device | str) -> Any: ...


class MIMMethod(nn.Module):
    """Base class: `sample_masks` draws the corruption for a global batch (outside the model, from an
    explicit generator), `forward({"images", "mask"})` returns a `StepOutput`, `encoder` is what
    gets exported and evaluated."""

    name: str = ""
    encoder: nn.Module
    lr_factor: float = 1.0  # the method's own factor on the batch-scaled lr (a training rule of its paper)
    picture_batch_multiple: int = 1  # `reconstruct` needs a batch of a multiple of this (MixMIM pairs images: 2)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> Sliceable:
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> StepOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def prepare_data(self, images: torch.Tensor, augment: BatchAugment, device: torch.device) -> None:
        """Called once by the trainer before the first step with the uint8 training set (batches then carry
        each image's dataset `indices` and `flip`): a method may precompute per-image targets. Default: nothing."""

    def optimizer_overrides(self) -> dict[str | tuple[str, ...], dict[str, float | None]]:
        """{parameter-name prefix(es): {"lr_scale", "weight_decay"}} for parts trained as if by an optimizer
        of their own (CIM's generator); the rest follows `optim`. Default: none."""
        return {}

    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Images for visualization: at least `input` (corrupted) and `prediction`, [B, C, H, W]."""
        raise NotImplementedError

    def picture_masks(self, batch_size: int, generator: torch.Generator) -> Sliceable:
        """The corruption `reconstruct` is shown with. Token-mask methods override it with
        `mim.masking.picture_masking` (one mask for every method at a given grid, unit and ratio); the default is
        a training draw from `generator`."""
        return self.sample_masks(batch_size, generator)

    def picture_note(self) -> str:
        """A caption line saying how the prediction panel was made displayable ("" when it is shown as predicted)."""
        return ""
