"""Early stopping and best-epoch tracking: small pure functions over an immutable state.

Two questions are answered from one state, because they differ once ``min_delta`` > 0:
- which epoch had the best monitored value (its weights are restored at the end), compared strictly;
- how many epochs in a row failed to improve by more than ``min_delta`` (the patience counter).
NaN never counts as an improvement, so a diverged run stops after ``patience`` epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Tracker:
    """Where a run stands: best value and epoch, and the patience counter's reference and count."""

    best_value: float | None = None  # best value seen so far (None until a non-NaN value arrives)
    best_epoch: int = 0  # 1-based epoch of ``best_value``; 0 while there is none
    ref_value: float | None = None  # last value that improved by more than min_delta
    bad_epochs: int = 0  # epochs in a row without such an improvement

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain values, for a checkpoint that loads with ``weights_only=True``."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "ref_value": self.ref_value,
            "bad_epochs": self.bad_epochs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> Tracker:
        """Inverse of ``to_dict``."""
        best, ref = data["best_value"], data["ref_value"]
        return cls(
            best_value=None if best is None else float(best),
            best_epoch=int(data["best_epoch"] or 0),
            ref_value=None if ref is None else float(ref),
            bad_epochs=int(data["bad_epochs"] or 0),
        )


def is_improvement(value: float, reference: float | None, *, mode: Mode, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``reference`` by more than ``min_delta`` in direction ``mode``.

    Anything that is not NaN beats no reference; NaN beats nothing.
    """
    if math.isnan(value):
        return False
    if reference is None or math.isnan(reference):
        return True
    if mode == "max":
        return value > reference + min_delta
    return value < reference - min_delta


def update(state: Tracker, epoch: int, value: float, *, mode: Mode, min_delta: float = 0.0) -> Tracker:
    """The state after ``epoch`` produced ``value`` of the monitored metric."""
    best_value, best_epoch = state.best_value, state.best_epoch
    if is_improvement(value, best_value, mode=mode):
        best_value, best_epoch = value, epoch
    if is_improvement(value, state.ref_value, mode=mode, min_delta=min_delta):
        return Tracker(best_value, best_epoch, value, 0)
    return Tracker(best_value, best_epoch, state.ref_value, state.bad_epochs + 1)


def should_stop(state: Tracker, patience: int | None) -> bool:
    """Whether ``patience`` epochs in a row have passed without improvement (never when patience is None)."""
    return patience is not None and state.bad_epochs >= patience
