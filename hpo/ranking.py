"""Which trial is best: one rule, used by the study views, the sweep's ledger and export. Pure, no Optuna."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def better(value: float, than: float, direction: str) -> bool:
    """Whether ``value`` beats ``than``. A tie does not: the earlier trial keeps the lead."""
    return value > than if direction == "maximize" else value < than


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
        return cls(int(trial.number), float(trial.value), dict(trial.params))

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "value": self.value, "params": self.params}
