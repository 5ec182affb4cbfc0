"""Explicit random number generators derived from (seed, *keys).

Every random draw in training (data order, augmentation, masks) comes from a generator seeded
by the run seed and the step it belongs to, so a resumed run replays exactly the same draws.
"""

from __future__ import annotations

import hashlib

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
