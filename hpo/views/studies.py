"""Read-only views of a storage: one study's status, every study's counts.

On a database (Optuna's ``RDBStorage``) they ask SQL for what they show (``hpo.views.queries``): counts and
the best by aggregates, the trial table by one bounded query, so they stay quick at 10,000 trials. Any other
storage goes through Optuna's API and ``hpo.views.status.summarize``, which is also the reference the SQL
path is tested against.

They only read, so they skip Optuna's schema-version check on open (``check_version=False``: Alembic's
script directory, read on every open); a schema too old for their queries fails them with a storage error,
and ``hpo sweep`` (which checks) says to run ``hpo storage upgrade``.
"""

from __future__ import annotations

from typing import Any

import optuna
import sqlalchemy as sa

from hpo import study as studies
from hpo.ranking import primary
from hpo.views import queries
from hpo.views.status import StudyStatus, TrialRow, summarize
from storage import opened


def study_status(storage_url: str, study_name: str, *, limit: int | None = None) -> StudyStatus:
    """The status of ``study_name``; ``limit``: only that many trial rows, the best first (None: every trial,
    by number)."""
    with opened(storage_url, check_version=False) as storage:  # read-only: see the module doc
        study = studies.load(storage, study_name)
        engine = queries.engine_of(storage)
        if engine is None:
            return _from_optuna(study, limit)
        with engine.connect() as conn:
            return status_from_sql(conn, study, limit=limit)


def _from_optuna(study: optuna.Study, limit: int | None) -> StudyStatus:
    return summarize(
        study.study_name,
        str(study.user_attrs.get(studies.ATTR_METRIC, "value")),
        studies.primary_direction(study),
        study.get_trials(deepcopy=False),
        objectives=studies.objectives(study),
        front=studies.pareto_front(study),
        limit=limit,
    )


def status_from_sql(conn: sa.Connection, study: optuna.Study, *, limit: int | None = None) -> StudyStatus:
    """``summarize``'s numbers for a study in a database, by SQL: no trial's curve is read, and params only
    for the rows shown, the best trial and the Pareto front."""
    sid = study._study_id
    direction = studies.primary_direction(study)
    directions = [d.name.lower() for d in study.directions]
    objectives = studies.objectives(study)
    every = queries.facts(conn, sid, reasons=limit is None)
    totals = queries.totals(every)
    shown = every
    if limit is not None:  # the best ``limit`` trials, and only their fail reasons
        top = queries.top_trial_ids(conn, sid, direction, limit)
        by_id = {f.trial_id: f for f in queries.facts(conn, sid, top)} if top else {}
        shown = [by_id[tid] for tid in top]
    shown_ids = [f.trial_id for f in shown]
    best = queries.best_trial(conn, sid, direction)
    values = queries.complete_values(conn, sid, len(directions)) if len(directions) > 1 else {}
    front = queries.pareto_front(values, directions) if values else []
    params = queries.params_of(conn, sorted({*shown_ids, *front, *([best[0]] if best else [])}))
    rows = [_row(f, params[f.trial_id]) for f in shown]
    return StudyStatus(
        study=study.study_name,
        metric=str(study.user_attrs.get(studies.ATTR_METRIC, "value")),
        direction=direction,
        counts=queries.state_counts(conn, sid)[sid],
        best=None if best is None else {"number": best[1], "value": best[2], "params": params[best[0]]},
        trial_seconds=totals.trial_seconds,
        epochs_run=totals.epochs_run,
        epochs_budget=totals.epochs_budget,
        epochs_saved=totals.epochs_saved,
        saved_fraction=totals.saved_fraction,
        n_trials=len(every),
        rows=rows,
        objectives=objectives if len(directions) > 1 else [],
        pareto=[
            {"number": values[t][0], "values": dict(zip(objectives, values[t][1], strict=False)), "params": params[t]}
            for t in front
        ],
    )


def _row(f: queries.Facts, params: dict[str, Any]) -> TrialRow:
    return TrialRow(
        number=f.number,
        state=f.state,
        value=f.value,
        params=params,
        epochs_run=f.epochs_run,
        max_epochs=f.max_epochs,
        duration_s=f.duration_s,
        reason=f.reason,
    )


def list_studies(storage_url: str) -> list[dict[str, Any]]:
    """Every study with its direction, metric, trial counts by state and best value (SQL aggregates over all
    studies at once on a database)."""
    with opened(storage_url, check_version=False) as storage:  # read-only: see the module doc
        engine = queries.engine_of(storage)
        if engine is None:
            return _list_from_optuna(storage)
        with engine.connect() as conn:
            found = queries.list_studies(conn)
            counts = queries.state_counts(conn)
            best = queries.best_per_study(conn, {s.study_id: s.directions[0] for s in found})
    empty = {s.name: 0 for s in optuna.trial.TrialState}
    rows = []
    for s in found:
        c = counts.get(s.study_id, empty)
        b = best.get(s.study_id)
        rows.append(
            {
                "study": s.name,
                "direction": s.directions[0],
                "metric": s.metric,
                "n_trials": sum(c.values()),
                "counts": c,
                "best_value": None if b is None else b[1],
                "best_trial": None if b is None else b[0],
            }
        )
    return rows


def _list_from_optuna(storage: Any) -> list[dict[str, Any]]:
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        direction = studies.primary_direction(study)
        best = studies.select_best(trials, direction)
        rows.append(
            {
                "study": s.study_name,
                "direction": direction,
                "metric": study.user_attrs.get(studies.ATTR_METRIC),
                "n_trials": len(trials),
                "counts": studies.state_counts(trials),
                "best_value": None if best is None else primary(best),
                "best_trial": None if best is None else best.number,
            }
        )
    return rows
