"""What a study holds: counts by state, the best trial, compute spent and compute saved. Pure
functions of the trials, so the numbers can be checked against ``optuna.load_study`` directly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo import study as studies
from hpo.ranking import Best, TrialSummary, primary


@dataclass(frozen=True)
class TrialRow(TrialSummary):
    epochs_run: int
    max_epochs: int | None
    duration_s: float | None
    reason: str | None


@dataclass(frozen=True)
class StudyStatus:
    study: str
    metric: str
    direction: str
    counts: dict[str, int]
    best: dict[str, Any] | None
    trial_seconds: float
    epochs_run: int
    epochs_budget: int  # what the finished and failed trials would have run without pruning or early stopping
    epochs_saved: int
    saved_fraction: float  # epochs_saved / epochs_budget (0 when there is no budget yet)
    n_trials: int
    rows: list[TrialRow]  # every trial by number, or (``limit``) the best first, bounded
    objectives: list[str] = field(default_factory=list)  # a multi-objective study's, primary first
    pareto: list[dict[str, Any]] = field(default_factory=list)  # its Pareto front: number, values, params
    paused: int = 0  # of the WAITING trials, those asha paused (``pruner: {type: asha}``): they may resume

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_row(t: FrozenTrial) -> TrialRow:
    config = studies.trial_train_config(t) or {}
    epochs = t.user_attrs.get(studies.ATTR_EPOCHS_RUN)
    if epochs is None:
        epochs = len(studies.curve(t))
    duration = t.user_attrs.get(studies.ATTR_DURATION)
    if duration is None and t.datetime_start is not None and t.datetime_complete is not None:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    value = primary(t)
    value = value if value is None or math.isfinite(value) else None
    return TrialRow(
        number=t.number,
        state=t.state.name,
        value=value,
        params=dict(t.params),
        epochs_run=int(epochs),
        max_epochs=config.get("epochs"),
        duration_s=float(duration) if duration is not None else None,
        reason=t.user_attrs.get(studies.ATTR_FAIL_REASON),
    )


def summarize(
    name: str,
    metric: str,
    direction: str,
    trials: Sequence[FrozenTrial],
    *,
    objectives: Sequence[str] = (),
    front: Sequence[FrozenTrial] = (),
    limit: int | None = None,
) -> StudyStatus:
    """The status of ``trials``; ``limit``: only that many rows, the failed first, then the best (as
    ``status_order`` orders them)."""
    rows = [trial_row(t) for t in sorted(trials, key=lambda t: t.number)]
    done = [r for r in rows if r.state in ("COMPLETE", "PRUNED", "FAIL")]
    budget = sum(r.max_epochs or r.epochs_run for r in done)
    run = sum(r.epochs_run for r in done)
    best = studies.select_best(trials, direction)
    return StudyStatus(
        study=name,
        metric=metric,
        direction=direction,
        counts=studies.state_counts(trials),
        paused=sum(1 for t in trials if studies.is_paused(t)),
        best=None if best is None else Best.of(best).as_dict(),
        trial_seconds=sum(r.duration_s or 0.0 for r in rows if r.state != TrialState.RUNNING.name),
        epochs_run=sum(r.epochs_run for r in rows),
        epochs_budget=budget,
        epochs_saved=max(0, budget - run),
        saved_fraction=(max(0, budget - run) / budget) if budget else 0.0,
        n_trials=len(rows),
        rows=rows if limit is None else status_order(rows, direction)[:limit],
        objectives=list(objectives) if len(objectives) > 1 else [],
        pareto=[
            {"number": t.number, "values": dict(zip(objectives, t.values or [], strict=False)), "params": t.params}
            for t in front
        ],
    )


def best_first(rows: Sequence[TrialRow], direction: str) -> list[TrialRow]:
    """Rows with a value first, the best first; ties and rows without a value by number (what ``hpo status``
    shows, and the order of ``queries.top_trial_ids``)."""
    return sorted(
        sorted(rows, key=lambda r: r.number),
        key=lambda r: (r.value is None, -(r.value or 0) if direction == "maximize" else (r.value or 0)),
    )


def status_order(rows: Sequence[TrialRow], direction: str) -> list[TrialRow]:
    """What ``hpo status`` lists: the FAIL trials first, by number (their reasons are what to read before a
    ``--limit`` cuts the list), then the others ``best_first``; the order of ``queries.top_trial_ids`` with
    ``failed_first``."""
    failed = sorted((r for r in rows if r.state == TrialState.FAIL.name), key=lambda r: r.number)
    return failed + best_first([r for r in rows if r.state != TrialState.FAIL.name], direction)
