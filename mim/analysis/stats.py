"""Means and 95 % intervals over seeds, and paired differences (method minus its random-init twin, seed by seed).

Pure functions of plain numbers (no scipy): Student's t quantile comes from the exact two-sided t distribution
for integer degrees of freedom (Abramowitz & Stegun 26.7.3-4), inverted by bisection. With one value there is no
interval (`half_width` None), and a report must say so rather than show a spread of zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` values and the half-width of its two-sided t interval (None when `n` is 1)."""

    mean: float
    half_width: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def significant(self) -> bool | None:
        """Whether the interval excludes 0 (for a difference); None without an interval."""
        if self.half_width is None:
            return None
        return self.low > 0 or self.high < 0


def t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (a positive integer) degrees of freedom, in closed form."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df}: need at least 1")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ... up to cos^(df-2))
        term = total = 1.0
        for k in range(2, df, 2):
            term *= (k - 1) / k * c2
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)  # 2/pi (theta + sin(theta) (cos + 2/3 cos^3 + ... up to cos^(df-2)))
    for k in range(3, df, 2):
        term *= (k - 1) / k * c2
        total += term
    return 2 / math.pi * (theta + s * total)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| <= t) = `level` (t_{0.975, df} for the default 95 %): 12.706 at df 1, 2.776 at df 4."""
    if not 0 < level < 1:
        raise ValueError(f"level {level}: must be between 0 and 1")
    low, high = 0.0, 1.0
    while t_two_sided(high, df) < level:
        high *= 2
    for _ in range(100):  # bisection to float precision
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided(mid, df) < level else (low, mid)
    return (low + high) / 2


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """The mean of `values` and the half-width of its t interval: t_{df=n-1} * sample std / sqrt(n)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values: a mean needs at least one")
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, None, 1)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, t_quantile(n - 1, level) * std / math.sqrt(n), n)


def paired_difference(values: Mapping[int, float], twin: Mapping[int, float], level: float = LEVEL
                      ) -> Estimate | None:
    """`values` minus `twin`, seed by seed over the seeds both have (paired: the seed's shared data order and
    subsets cancel), as a mean with its t interval; None when they share no seed."""
    common = [s for s in values if s in twin]
    if not common:
        return None
    return mean_interval([values[s] - twin[s] for s in common], level)
