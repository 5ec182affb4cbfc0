"""Argument checks shared by the mask generators (clear `ValueError`s that name the bad value)."""

from __future__ import annotations


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


def count_for_ratio(total: int, ratio: float) -> int:
    """Number of masked items out of `total` for `ratio`: round half up, `int(total * ratio + 0.5)`."""
    return int(total * ratio + 0.5)
