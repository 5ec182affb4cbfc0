"""FSDP (`launcher.strategy: fsdp`): parameters, gradients and optimizer state sharded across ranks (torch's
`fully_shard`), for models that do not fit with DDP. Checkpoints stay whole (gathered on rank 0), so they load
the same way whatever the number of ranks; the exported encoder and pictures come from an unsharded copy."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def shard(model: nn.Module) -> nn.Module:
    """Shard each block of every `blocks` list (ViT blocks, decoder blocks, hierarchical stages' blocks), then the
    rest at the root; returns an unsharded CPU copy kept for export. Call before building the optimizer."""
    from torch.distributed.fsdp import fully_shard

    template = copy.deepcopy(model).cpu()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if name == "blocks" and isinstance(child, nn.ModuleList):
                for block in child:
                    fully_shard(block)
    fully_shard(model)
    return template


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, optimizer) state dicts gathered whole on the CPU; a collective: call it on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optim_state: dict[str, Any]) -> None:
    """Load whole (model, optimizer) state dicts into the sharded model on every rank (strict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True, strict=True))


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """FSDP's counterpart of DDP's `no_sync`: skip the reduce-scatter on all but the last micro-batch."""
    model.set_requires_gradient_sync(enabled)
