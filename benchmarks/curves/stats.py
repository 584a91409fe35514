"""Paired comparisons over replay seeds: the mean difference and its 95% t-interval, and the verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    low: float
    high: float

    def verdict(self, better: str = "above") -> str:
        """``win`` when the whole interval is on the ``better`` side of zero, ``loss`` when on the other, else
        ``tie``."""
        above, below = self.low > 0, self.high < 0
        if better == "below":
            above, below = below, above
        return "win" if above else "loss" if below else "tie"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """``mean(a - b)`` over pairs, with its 95% t-interval (``a`` and ``b`` in the same seed order)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return interval(diffs)


def interval(values: Sequence[float]) -> Paired:
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Paired(n, mean, -math.inf, math.inf)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Paired(n, mean, mean - half, mean + half)
