"""Which trial is best: one rule, used by the study views, the sweep's ledger and export. Pure, no Optuna."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def better(value: float, than: float, direction: str) -> bool:
    """Whether ``value`` beats ``than``. A tie does not: the earlier trial keeps the lead."""
    return value > than if direction == "maximize" else value < than


def primary(trial: Any) -> float | None:
    """A finished trial's value, or its primary (first) objective's in a multi-objective study (where Optuna's
    ``FrozenTrial.value`` raises)."""
    values = getattr(trial, "values", None)
    return None if not values or values[0] is None else float(values[0])


def ranks(value: float | None) -> bool:
    """Whether a trial's value can be ranked at all (a finite number)."""
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class TrialSummary:
    """What every view of a trial starts with (the progress line, the status table)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any]


@dataclass(frozen=True)
class Best:
    """The best trial so far, as the sweep and the views report it."""

    number: int
    value: float
    params: dict[str, Any]

    @classmethod
    def of(cls, trial: Any) -> Best:
        """From a COMPLETE trial (anything with ``number``, ``value`` and ``params``)."""
        return cls(int(trial.number), float(primary(trial)), dict(trial.params))  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "value": self.value, "params": self.params}


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def holds(self, values: Mapping[str, float]) -> bool:
        return self.metric in values and _OPS[self.op](values[self.metric], self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_pick(text: str, objectives: Sequence[str]) -> list[Constraint]:
    """``'latency_ms<=5, params_m<12'``: constraints on a multi-objective study's objectives (``ValueError``
    naming the bad part)."""
    out = []
    for part in [p.strip() for p in re.split(r",|\band\b", text) if p.strip()]:
        m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)", part)
        if m is None:
            raise ValueError(f"--pick: {part!r} is not METRIC<=NUMBER (or >=, <, >)")
        metric, op, number = m.groups()
        if metric not in objectives:
            raise ValueError(f"--pick: {metric!r} is not an objective of this study ({', '.join(objectives)})")
        try:
            bound = float(number)
        except ValueError:
            raise ValueError(f"--pick: {number!r} in {part!r} is not a number") from None
        out.append(Constraint(metric, op, bound))
    if not out:
        raise ValueError(f"--pick: no constraint in {text!r}")
    return out
