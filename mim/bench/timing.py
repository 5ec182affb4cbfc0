"""Timing a training step fairly: one model's step with its timing, peak-memory and loss records, parameter
counts, and device names, shared by the throughput benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mim.engine.runtime import autocast


def count_params(model: nn.Module) -> dict[str, int]:
    """Total and trainable (requires_grad) parameter counts."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes a model keeps between steps: parameters, buffers and optimizer state (grads are set to None)."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


# Dense bf16 tensor-core peaks (TFLOP/s) by device name, for model FLOP utilisation; `--peak-tflops` overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(name: str) -> float | None:
    """The table's peak for the first key found in the device name (None: unknown or a CPU)."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepRunner:
    """One model's training step plus what the benchmark records about it."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        forward: Callable[[nn.Module], torch.Tensor],
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> None:
        self.name, self.model, self.optimizer, self.forward = name, model, optimizer, forward
        self.device, self.dtype = device, dtype
        self.first_loss: torch.Tensor | None = None  # loss of the very first step (initial weights)
        self.last_loss: torch.Tensor | None = None
        self.step_s: list[float] = []  # mean seconds per step of each timed round
        self.peak_bytes = 0  # largest transient allocation of a round (CUDA only)

    def count_flops(self) -> int:
        """FLOPs of one forward + backward (`torch.utils.flop_counter`: matmuls, convolutions, attention); the
        optimizer step is not counted, as in the usual model-FLOP-utilisation figure."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, autocast(self.device, self.dtype):
            loss = self.forward(self.model)
        with FlopCounterMode(display=False) as backward:
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() + backward.get_total_flops()

    def step(self) -> torch.Tensor:
        """One full training step; returns the detached loss (no host sync)."""
        with autocast(self.device, self.dtype):
            loss = self.forward(self.model)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def run(self, steps: int, timed: bool) -> None:
        """`steps` steps; when timed, one timing (and CUDA peak memory) record for the block."""
        cuda = self.device.type == "cuda"
        if timed and cuda:  # measure this model's memory in isolation from the other one's transients
            sync(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device) if cuda else 0
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.last_loss = self.step()
            if self.first_loss is None:
                self.first_loss = self.last_loss
        sync(self.device)
        elapsed = time.perf_counter() - start
        if timed:
            self.step_s.append(elapsed / steps)
            if cuda:
                self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device) - before)

    def summary(self, batch: int) -> dict[str, Any]:
        """img/s, median step time, peak memory and first/last loss."""
        median = statistics.median(self.step_s)
        peak = None
        if self.device.type == "cuda":
            peak = round((self.peak_bytes + resident_bytes(self.model, self.optimizer)) / 2**20, 1)
        return {
            "img_per_s": batch / median,
            "step_ms_median": median * 1e3,
            "step_ms_min": min(self.step_s) * 1e3,
            "step_ms_rounds": [round(s * 1e3, 3) for s in self.step_s],
            "peak_mem_mb": peak,
            "loss_first": float(self.first_loss),
            "loss_last": float(self.last_loss),
        }
