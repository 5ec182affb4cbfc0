"""Argument checks shared by the mask generators (clear `ValueError`s that name the bad value)."""

from __future__ import annotations

from typing import Literal, get_args

MaskCount = Literal["official", "round"]
"""How a mask ratio becomes a count of N tokens: `official` keeps `int(N * (1 - ratio))` (MAE's and transformers'
ViTMAE code: the masked count rounds up, and float error can floor it further, `int(10 * (1 - 0.9)) == 0`);
`round` masks `int(N * ratio + 0.5)` (half up)."""
MASK_COUNTS: tuple[str, ...] = get_args(MaskCount)


def check_ratio(ratio: float, *, allow_one: bool = False) -> float:
    """Return `ratio` as a float after checking it lies in [0, 1) (or [0, 1] when `allow_one`)."""
    value = float(ratio)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"mask ratio must be in {interval}, got {ratio!r}")
    return value


def check_positive_int(name: str, value: int) -> int:
    """Return `value` after checking it is an int >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_batch_size(batch_size: int) -> int:
    """Return `batch_size` after checking it is an int >= 0 (an empty batch is allowed)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    return batch_size


def count_for_ratio(total: int, ratio: float, rule: MaskCount = "round") -> int:
    """Number of masked items out of `total` for `ratio` under `rule` (see `MaskCount`): `round` (the default)
    masks `int(total * ratio + 0.5)`, `official` masks `total - int(total * (1 - ratio))`."""
    if rule == "round":
        return int(total * ratio + 0.5)
    if rule == "official":
        return total - int(total * (1 - ratio))
    raise ValueError(f"mask count rule must be one of {', '.join(MASK_COUNTS)}, got {rule!r}")
