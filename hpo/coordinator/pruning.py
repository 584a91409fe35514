"""Optuna's median stopping rule, computed from statistics kept up to date as trials complete. Pure.

``optuna.pruners.MedianPruner.prune`` walks every completed trial on every call (and a fresh worker
first reads the whole study): cost grows with the study. ``MedianRule`` gives the same answer from
per-step sorted value lists that grow by one entry per completed trial, so a decision costs about the
same at 100 or 100,000 trials. The arithmetic (``np.nanpercentile``'s interpolation over the same
values, the same warm-up, interval and NaN rules) is Optuna's;
``tests/test_pruning.py`` checks the decisions against ``MedianPruner`` on random studies.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Direction = str  # "maximize" | "minimize"


@dataclass(frozen=True)
class MedianRule:
    """The settings of ``optuna.pruners.MedianPruner``."""

    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1

    def to_optuna(self) -> object:
        import optuna

        return optuna.pruners.MedianPruner(
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
            n_min_trials=self.n_min_trials,
        )


@dataclass
class StepStatistics:
    """The intermediate values of COMPLETE trials, by step, each step's values kept sorted.

    The median (the only percentile the median rule asks for) is read off the sorted values in constant
    time, with numpy's own interpolation arithmetic, so a decision costs the same at 100 or 100,000
    trials and right after a trial completes; adding a trial is a binary-search insert per step. Other
    percentiles go through ``np.nanpercentile``, cached per step until the step changes.
    """

    n_trials: int = 0
    _sorted: dict[int, list[float]] = field(default_factory=dict)  # non-NaN values, ascending
    _counts: dict[int, int] = field(default_factory=dict)  # values at the step, NaN included
    _cache: dict[tuple[int, float], float] = field(default_factory=dict)

    def add_trial(self, intermediate_values: Mapping[int, float]) -> None:
        """Count one more COMPLETE trial with these intermediate values."""
        self.n_trials += 1
        for step, value in intermediate_values.items():
            v = float(value)
            self._counts[step] = self._counts.get(step, 0) + 1
            values = self._sorted.setdefault(step, [])
            if not math.isnan(v):
                bisect.insort(values, v)
            if self._cache:
                self._cache = {k: c for k, c in self._cache.items() if k[0] != step}

    def percentile(self, step: int, q: float, n_min_trials: int) -> float:
        """``np.nanpercentile`` of the values at ``step`` (NaN when fewer than ``n_min_trials`` trials have one)."""
        if self._counts.get(step, 0) < n_min_trials:
            return math.nan
        values = self._sorted.get(step, [])
        if not values:
            return math.nan  # only NaN at this step: numpy's answer too
        if q == 50.0:
            return _sorted_median(values)
        key = (step, q)
        cached = self._cache.get(key)
        if cached is None:
            cached = float(np.percentile(np.array(values, dtype=float), q))
            self._cache[key] = cached
        return cached


def _sorted_median(values: list[float]) -> float:
    """``np.percentile(values, 50)`` (method "linear") of ascending, NaN-free ``values``, with numpy's arithmetic:
    virtual index ``n * 0.5 + 0.5 - 1``, then ``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` when ``g >= 0.5``.
    IEEE arithmetic is the same in Python, so infinities give numpy's NaN where numpy gives one."""
    n = len(values)
    index = n * 0.5 + 0.5 - 1.0
    below = math.floor(index)
    gamma = index - below
    a = values[below]
    b = values[min(below + 1, n - 1)]
    diff = b - a
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def is_first_in_interval_step(step: int, steps: Mapping[int, float], n_warmup_steps: int, interval_steps: int) -> bool:
    """Whether ``step`` is the first reported step in its pruning interval (Optuna's rule)."""
    nearest_lower_pruning_step = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    second_last_step = max((s for s in steps if s != step), default=-1)
    return second_last_step < nearest_lower_pruning_step


def best_value(values: Mapping[int, float], direction: Direction) -> float:
    """The trial's best intermediate value so far, ignoring NaN (NaN if all are NaN)."""
    finite = [v for v in values.values() if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if direction == "maximize" else min(finite)


def should_prune(rule: MedianRule, stats: StepStatistics, values: Mapping[int, float], direction: Direction) -> bool:
    """Optuna's ``MedianPruner.prune`` for a trial whose intermediate values are ``values``."""
    if stats.n_trials == 0 or stats.n_trials < rule.n_startup_trials:
        return False
    if not values:
        return False
    step = max(values)
    if step < rule.n_warmup_steps:
        return False
    if not is_first_in_interval_step(step, values, rule.n_warmup_steps, rule.interval_steps):
        return False
    best = best_value(values, direction)
    if math.isnan(best):
        return True
    q = 50.0  # the median; Optuna flips the percentile for maximization, which is the same at 50
    p = stats.percentile(step, q if direction == "minimize" else 100 - q, rule.n_min_trials)
    if math.isnan(p):
        return False
    return best < p if direction == "maximize" else best > p
