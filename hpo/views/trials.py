"""``hpo trials`` and ``hpo best``: a study's trials as a list (with a state filter), and its best trial for
scripts. Read-only, on the same plain connection and queries as ``hpo status`` (``hpo.views.queries``): one
narrow row per trial, then the params of only the rows shown.

A trial asha paused (WAITING with the system attr ``hpo.study.SYS_PAUSED``) is listed as PAUSED, as every view
names it; ``--state waiting`` lists the other WAITING trials (enqueued, not yet asked).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import TrialState

from hpo import study as studies
from hpo.errors import HpoError
from hpo.ranking import better, ranks
from hpo.views import queries
from hpo.views._readonly import connect
from hpo.views.studies import find, objectives_of

PAUSED = "PAUSED"
#: What ``--state`` takes: Optuna's states, and PAUSED (the WAITING trials asha paused).
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING", PAUSED)


def parse_states(names: Iterable[str]) -> set[str] | None:
    """``--state`` values (any case; repeated or comma-separated) as state names; None for none given.
    ``HpoError`` naming a state hpo does not know."""
    wanted = {n.strip().upper() for name in names for n in name.split(",") if n.strip()}
    unknown = sorted(wanted - set(STATES))
    if unknown:
        raise HpoError(f"--state: {unknown[0].lower()!r} is not a trial state (one of: {', '.join(STATES).lower()})")
    return wanted or None


@dataclass(frozen=True)
class TrialLine:
    """One trial as ``hpo trials`` lists it."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING | PAUSED
    value: float | None  # the primary objective, when finite
    params: dict[str, Any]
    duration_s: float | None
    epochs_run: int
    reason: str | None  # why a FAIL trial failed


@dataclass(frozen=True)
class TrialList:
    study: str
    metric: str
    direction: str
    total: int  # trials in the study
    matched: int  # trials in the states asked for (all, without a filter)
    trials: list[TrialLine]  # by number: the last ``limit`` of those that matched

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_trials(url: str, study_name: str, *, states: set[str] | None = None, limit: int | None = None) -> TrialList:
    """The trials of ``study_name`` by number, those in ``states`` only (``STATES`` names; None: every one);
    ``limit``: only the last (newest) that many of them."""
    with connect(url) as conn:
        info = find(conn, study_name)
        rows = queries.facts(conn, info.study_id)
        paused = _paused_ids(conn, [r.trial_id for r in rows if r.state == TrialState.WAITING.name])
        shown_state = {r.trial_id: PAUSED if r.trial_id in paused else r.state for r in rows}
        matched = [r for r in rows if states is None or shown_state[r.trial_id] in states]
        shown = matched[-limit:] if limit else matched
        params = queries.params_of(conn, [r.trial_id for r in shown])
    lines = [
        TrialLine(
            number=r.number,
            state=shown_state[r.trial_id],
            value=r.value,
            params=params[r.trial_id],
            duration_s=r.duration_s,
            epochs_run=r.epochs_run,
            reason=r.reason,
        )
        for r in shown
    ]
    metric = str(info.attrs.get(studies.ATTR_METRIC, "value"))
    return TrialList(info.name, metric, info.directions[0], len(rows), len(matched), lines)


def _paused_ids(conn: sa.Connection, waiting: Sequence[int]) -> set[int]:
    """Of the WAITING trials ``waiting``, those asha paused (``hpo.study.is_paused``'s rule)."""
    if not waiting:
        return set()
    attrs = models.TrialSystemAttributeModel.__table__
    q = sa.select(attrs.c.trial_id).where(attrs.c.trial_id.in_(list(waiting)), attrs.c.key == studies.SYS_PAUSED)
    return {int(tid) for (tid,) in conn.execute(q) if tid is not None}


@dataclass(frozen=True)
class BestTrial:
    """What ``hpo best`` prints: the trial ``hpo export`` would export, and the training config it ran."""

    study: str
    number: int
    value: float  # the primary objective
    metric: str
    direction: str
    values: dict[str, float]  # every objective (one for a single-objective study)
    params: dict[str, Any]
    train_config: dict[str, Any] | None  # None for a trial hpo did not run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_trial(url: str, study_name: str) -> BestTrial:
    """The best trial of ``study_name`` by ``hpo export``'s rule (``hpo.study.select_best``: the COMPLETE trial
    with the best finite primary value, the earliest on a tie; a multi-objective study: that among the Pareto
    front). ``HpoError`` when no trial has finished with a value."""
    with connect(url) as conn:
        info = find(conn, study_name)
        objectives = objectives_of(info)
        direction = info.directions[0]
        if len(info.directions) > 1:
            points = queries.complete_values(conn, info.study_id, len(info.directions))
            front = queries.pareto_front(points, info.directions)
            chosen = _best_of({tid: points[tid] for tid in front}, direction)
        else:  # one ORDER BY ... LIMIT 1
            found = queries.best_trial(conn, info.study_id, direction)
            chosen = None if found is None else found[0]
            points = {} if found is None else {found[0]: (found[1], [found[2]])}
        if chosen is None:
            raise HpoError(f"study {study_name!r} has no COMPLETE trial with a value yet; no best trial")
        params = queries.params_of(conn, [chosen])[chosen]
        config = _train_config(conn, chosen)
    number, values = points[chosen]
    return BestTrial(
        study=info.name,
        number=number,
        value=values[0],
        metric=str(info.attrs.get(studies.ATTR_METRIC, "value")),
        direction=direction,
        values=dict(zip(objectives, values, strict=False)),
        params=params,
        train_config=config,
    )


def _best_of(points: dict[int, tuple[int, list[float]]], direction: str) -> int | None:
    """The trial id with the best finite primary value of ``points`` (trial_id -> (number, values)), the earliest
    by number on a tie, as ``select_best`` picks among a Pareto front."""
    best: int | None = None
    for tid in sorted(points, key=lambda t: points[t][0]):
        value = points[tid][1][0]
        if ranks(value) and (best is None or better(value, points[best][1][0], direction)):
            best = tid
    return best


def _train_config(conn: sa.Connection, trial_id: int) -> dict[str, Any] | None:
    attrs = models.TrialUserAttributeModel.__table__
    raw = conn.execute(
        sa.select(attrs.c.value_json).where(attrs.c.trial_id == trial_id, attrs.c.key == studies.ATTR_TRAIN_CONFIG)
    ).scalar_one_or_none()
    if raw is None:
        return None
    value = json.loads(raw)
    return json.loads(value) if isinstance(value, str) else dict(value)
