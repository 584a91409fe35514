"""Read-only views of a storage: one study's status, every study's counts.

On a database they ask SQL for what they show (``hpo.views.queries``): counts, the best and the compute
totals by aggregates, the trial table by one bounded query, so they stay quick at 10,000 trials. They open one
plain connection (``hpo.views._readonly``), not Optuna's ``RDBStorage``: its pool, sessions and version manager
(which imports Alembic) are half of these commands' start-up. Any other storage (a library caller's in-memory or
journal storage) goes through Optuna's API and ``hpo.views.status.summarize``, which is also the reference the SQL
path is tested against.

They only read and skip Optuna's schema-version check; a schema too old for their queries fails them with a
storage error, and ``hpo sweep`` (which checks) says to run ``hpo storage upgrade``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hpo import study as studies
from hpo.errors import StudyNotFoundError
from hpo.ranking import primary
from hpo.views import queries
from hpo.views._readonly import connect
from hpo.views.status import StudyStatus, TrialRow, summarize


def study_status(storage: Any, study_name: str, *, limit: int | None = None) -> StudyStatus:
    """The status of ``study_name`` in ``storage`` (a URL, or an Optuna storage object); ``limit``: only that
    many trial rows, the failed first, then the best (None: every trial, by number)."""
    if not isinstance(storage, str):
        return _from_optuna(studies.load(storage, study_name), limit)
    with connect(storage) as conn:
        return status_from_sql(conn, find(conn, study_name), limit=limit)


def find(conn: sa.Connection, name: str) -> queries.StudyInfo:
    """Study ``name``, or ``StudyNotFoundError`` listing the studies that do exist (as ``hpo.study.load``)."""
    info = queries.study_info(conn, name)
    if info is None:
        names = sorted(queries.study_names(conn))
        known = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"
        raise StudyNotFoundError(f"study {name!r} not found (studies in this storage: {known})")
    return info


def _from_optuna(study: Any, limit: int | None) -> StudyStatus:
    return summarize(
        study.study_name,
        str(study.user_attrs.get(studies.ATTR_METRIC, "value")),
        studies.primary_direction(study),
        study.get_trials(deepcopy=False),
        objectives=studies.objectives(study),
        front=studies.pareto_front(study),
        limit=limit,
    )


def objectives_of(info: queries.StudyInfo) -> list[str]:
    """``hpo.study.objectives`` from the study's attrs: hpo's record, else its metric (or value), value1, ..."""
    recorded = info.attrs.get(studies.ATTR_OBJECTIVES)
    if recorded:
        return [str(m) for m in recorded]
    metric = str(info.attrs.get(studies.ATTR_METRIC, "value"))
    return [metric] + [f"value{i}" for i in range(1, len(info.directions))]


def status_from_sql(conn: sa.Connection, info: queries.StudyInfo, *, limit: int | None = None) -> StudyStatus:
    """``summarize``'s numbers for a study in a database, by SQL: no trial's curve is read, and params only
    for the rows shown, the best trial and the Pareto front. With ``limit``, counts and totals are aggregates
    (no row per trial leaves the database); without, every trial's row is read anyway and they are summed
    from those."""
    sid = info.study_id
    directions = info.directions
    direction = directions[0]
    objectives = objectives_of(info)
    if limit is None:
        shown = queries.facts(conn, sid)
        totals = queries.totals(shown)
        counts = queries.state_counts(conn, sid)[sid]
    else:  # the failed trials, then the best: ``limit`` of them, and only their fail reasons
        counts, totals = queries.study_totals(conn, sid)
        top = queries.top_trial_ids(conn, sid, direction, limit, failed_first=True)
        by_id = {f.trial_id: f for f in queries.facts(conn, sid, top)} if top else {}
        shown = [by_id[tid] for tid in top]
    shown_ids = [f.trial_id for f in shown]
    best = queries.best_trial(conn, sid, direction)
    values = queries.complete_values(conn, sid, len(directions)) if len(directions) > 1 else {}
    front = queries.pareto_front(values, directions) if values else []
    params = queries.params_of(conn, sorted({*shown_ids, *front, *([best[0]] if best else [])}))
    rows = [_row(f, params[f.trial_id]) for f in shown]
    return StudyStatus(
        study=info.name,
        metric=str(info.attrs.get(studies.ATTR_METRIC, "value")),
        direction=direction,
        counts=counts,
        best=None if best is None else {"number": best[1], "value": best[2], "params": params[best[0]]},
        trial_seconds=totals.trial_seconds,
        epochs_run=totals.epochs_run,
        epochs_budget=totals.epochs_budget,
        epochs_saved=totals.epochs_saved,
        saved_fraction=totals.saved_fraction,
        n_trials=sum(counts.values()),
        rows=rows,
        objectives=objectives if len(directions) > 1 else [],
        pareto=[
            {"number": values[t][0], "values": dict(zip(objectives, values[t][1], strict=False)), "params": params[t]}
            for t in front
        ],
        paused=queries.paused_count(conn, sid),
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


def list_studies(storage: Any) -> list[dict[str, Any]]:
    """Every study in ``storage`` (a URL, or an Optuna storage object) with its direction, metric, trial counts
    by state and best value (SQL aggregates over all studies at once on a database)."""
    if not isinstance(storage, str):
        return _list_from_optuna(storage)
    with connect(storage) as conn:
        found = queries.list_studies(conn)
        counts = queries.state_counts(conn)
        best = queries.best_per_study(conn, {s.study_id: s.directions[0] for s in found})
    empty = {s: 0 for s in queries.STATES}
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
    import optuna

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
