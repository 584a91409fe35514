"""Early stopping and best-epoch tracking, as tables of metric sequences and expected decisions."""

from __future__ import annotations

import math

import pytest

from trials.early_stopping import Tracker, is_improvement, should_stop, update

nan = math.nan


@pytest.mark.parametrize(
    ("value", "reference", "mode", "min_delta", "expected"),
    [
        (0.5, None, "max", 0.0, True),  # anything beats no reference
        (0.5, 0.4, "max", 0.0, True),
        (0.4, 0.4, "max", 0.0, False),  # equal is not better
        (0.3, 0.4, "max", 0.0, False),
        (0.3, 0.4, "min", 0.0, True),
        (0.5, 0.4, "min", 0.0, False),
        (0.45, 0.4, "max", 0.1, False),  # better, but not by more than min_delta
        (0.55, 0.4, "max", 0.1, True),
        (0.35, 0.4, "min", 0.1, False),
        (0.25, 0.4, "min", 0.1, True),
        (nan, None, "max", 0.0, False),  # NaN never improves, not even on nothing
        (nan, 0.4, "min", 0.0, False),
        (0.1, nan, "min", 0.0, True),  # a NaN reference is no reference
        (math.inf, 0.4, "min", 0.0, False),
        (-math.inf, 0.4, "min", 0.0, True),
    ],
)
def test_is_improvement(value: float, reference: float | None, mode: str, min_delta: float, expected: bool) -> None:
    assert is_improvement(value, reference, mode=mode, min_delta=min_delta) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "mode", "min_delta", "patience", "stop_after", "best_epoch"),
    [
        ([0.1, 0.2, 0.3, 0.4], "max", 0.0, 2, None, 4),  # always improving
        ([0.5, 0.5, 0.5, 0.5], "max", 0.0, 2, 3, 1),  # flat: stop after 1 + patience epochs
        ([0.5, 0.4, 0.6, 0.5, 0.5], "max", 0.0, 2, 5, 3),  # counter resets on improvement
        ([1.0, 0.9, 0.95, 0.8], "min", 0.0, 2, None, 4),  # val_loss going down at epoch 2 and 4
        ([1.0, 1.1, 1.2, 0.5], "min", 0.0, 2, 3, 1),  # stops before the late improvement
        ([0.5, 0.52, 0.54, 0.545], "max", 0.05, 3, 4, 4),  # tiny steps: best moves, patience runs out
        ([0.5, 0.52, 0.54, 0.56], "max", 0.05, 3, None, 4),  # 0.56 beats 0.5 by more than 0.05
        ([nan, nan, nan], "max", 0.0, 2, 2, 0),  # diverged from the start
        ([0.3, nan, nan, 0.2], "max", 0.0, 2, 3, 1),  # NaN after a good epoch
        ([0.3, 0.2, 0.1, 0.0], "max", 0.0, None, None, 1),  # patience None: never stops
    ],
)
def test_sequences(
    values: list[float], mode: str, min_delta: float, patience: int | None, stop_after: int | None, best_epoch: int
) -> None:
    state, stopped_at = Tracker(), None
    for epoch, value in enumerate(values, start=1):
        state = update(state, epoch, value, mode=mode, min_delta=min_delta)  # type: ignore[arg-type]
        if should_stop(state, patience):
            stopped_at = epoch
            break
    assert stopped_at == stop_after
    assert state.best_epoch == best_epoch


def test_tracker_round_trips_through_plain_dict() -> None:
    state = update(update(Tracker(), 1, 0.7, mode="max"), 2, 0.6, mode="max")
    assert Tracker.from_dict(state.to_dict()) == state == Tracker(0.7, 1, 0.7, 1)
