"""Explicit random number generators derived from (seed, *keys).

Every random draw in training (data order, augmentation, masks) comes from a generator seeded
by the run seed and the step it belongs to, so a resumed run replays exactly the same draws.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends on `seed` and every key (stable across processes and runs)."""
    text = ":".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator_for(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded from `derive_seed(seed, *keys)`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


@contextmanager
def seeded_globals(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with Python's `random`, numpy's and torch's global generators (and `device`'s, when CUDA) seeded
    from `seed`, restoring their state after: for third-party code that draws only from the globals (timm's
    RandAugment and RandomErasing), so its draws replay per step and leave every other draw unchanged."""
    device = torch.device(device)
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
