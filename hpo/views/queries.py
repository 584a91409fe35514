"""The read side in SQL: what ``hpo status``, ``hpo studies`` and ``hpo report`` need from a study, asked of
Optuna's own tables (``optuna.storages._rdb.models``) with SQLAlchemy Core, so it works on PostgreSQL,
SQLite and MySQL alike.

Loading a study through Optuna's API reads every trial with every intermediate value (200,000 rows for
10,000 trials of 20 epochs). These queries read what the views show: counts by ``GROUP BY``, the best trial
by ``ORDER BY value LIMIT 1``, the top-k table by one bounded query and then only those k trials' params,
and one narrow row per trial (no params, no curves) for the compute totals. Every function takes a
connection; the engine belongs to the storage ``storage.opened`` built (nothing here is module-level).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models
from optuna.trial import TrialState

from hpo import study as studies

_trials = models.TrialModel.__table__
_values = models.TrialValueModel.__table__
_params = models.TrialParamModel.__table__
_attrs = models.TrialUserAttributeModel.__table__
_inter = models.TrialIntermediateValueModel.__table__
_studies = models.StudyModel.__table__
_directions = models.StudyDirectionModel.__table__
_study_attrs = models.StudyUserAttributeModel.__table__

#: Optuna's trial states by name, in its order.
STATES = tuple(s.name for s in TrialState)

_FINITE = models.TrialValueModel.TrialValueType.FINITE
_INF_POS = models.TrialValueModel.TrialValueType.INF_POS


def engine_of(storage: Any) -> sa.engine.Engine | None:
    """The SQLAlchemy engine of an Optuna ``RDBStorage`` (or of the one a cached storage wraps); None for
    any other storage (in-memory, journal, gRPC), whose views go through Optuna's API instead."""
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    return engine if isinstance(engine, sa.engine.Engine) else None


@dataclass(frozen=True)
class StudyRow:
    study_id: int
    name: str
    directions: list[str]  # "minimize" | "maximize", by objective
    metric: str | None  # hpo's ``metric`` study attr, None for a study hpo did not make


@dataclass(frozen=True)
class Facts:
    """One trial, narrowly: what the status table and the compute totals need, nothing per step."""

    trial_id: int
    number: int
    state: str
    value: float | None  # the primary objective when it is a finite number
    epochs_run: int
    max_epochs: int | None
    duration_s: float | None
    reason: str | None


@dataclass(frozen=True)
class Totals:
    trial_seconds: float  # every trial that is not RUNNING
    epochs_run: int  # every trial
    epochs_budget: int  # COMPLETE, PRUNED and FAIL trials: their configured epochs (else what they ran)
    epochs_saved: int  # the budget less what those trials ran

    @property
    def saved_fraction(self) -> float:
        return self.epochs_saved / self.epochs_budget if self.epochs_budget else 0.0


# ---------------------------------------------------------------------------------------------------
# Studies


def list_studies(conn: sa.Connection) -> list[StudyRow]:
    """Every study, by id, with its directions and hpo's metric attr."""
    directions: dict[int, list[str]] = {}
    for sid, _, direction in conn.execute(
        sa.select(_directions.c.study_id, _directions.c.objective, _directions.c.direction).order_by(
            _directions.c.study_id, _directions.c.objective
        )
    ):
        directions.setdefault(sid, []).append(direction.name.lower())
    metrics = {
        sid: json.loads(raw)
        for sid, raw in conn.execute(
            sa.select(_study_attrs.c.study_id, _study_attrs.c.value_json).where(
                _study_attrs.c.key == studies.ATTR_METRIC
            )
        )
    }
    rows = conn.execute(sa.select(_studies.c.study_id, _studies.c.study_name).order_by(_studies.c.study_id))
    return [
        StudyRow(
            sid,
            name,
            directions.get(sid, ["minimize"]),
            None if metrics.get(sid) is None else str(metrics[sid]),
        )
        for sid, name in rows
    ]


def study_id(conn: sa.Connection, name: str) -> int | None:
    return conn.execute(sa.select(_studies.c.study_id).where(_studies.c.study_name == name)).scalar_one_or_none()


@dataclass(frozen=True)
class StudyInfo:
    """What the views need of one study besides its trials: its id, directions and user attrs."""

    study_id: int
    name: str
    directions: list[str]  # "minimize" | "maximize", by objective
    attrs: dict[str, Any]  # the study's user attrs, decoded


def study_info(conn: sa.Connection, name: str) -> StudyInfo | None:
    """Study ``name`` by three small queries (no trial is read); None when there is no such study."""
    sid = study_id(conn, name)
    if sid is None:
        return None
    directions = [
        d.name.lower()
        for (d,) in conn.execute(
            sa.select(_directions.c.direction).where(_directions.c.study_id == sid).order_by(_directions.c.objective)
        )
    ]
    attrs = {
        key: json.loads(raw)
        for key, raw in conn.execute(
            sa.select(_study_attrs.c.key, _study_attrs.c.value_json).where(_study_attrs.c.study_id == sid)
        )
    }
    return StudyInfo(int(sid), name, directions or ["minimize"], attrs)


def study_names(conn: sa.Connection) -> list[str]:
    return [str(n) for (n,) in conn.execute(sa.select(_studies.c.study_name).order_by(_studies.c.study_id))]


# ---------------------------------------------------------------------------------------------------
# Aggregates


def state_counts(conn: sa.Connection, study: int | None = None) -> dict[int, dict[str, int]]:
    """Trials by state name per study id (every state present), by one ``GROUP BY``; ``study``: that one."""
    q = sa.select(_trials.c.study_id, _trials.c.state, sa.func.count()).group_by(_trials.c.study_id, _trials.c.state)
    if study is not None:
        q = q.where(_trials.c.study_id == study)
    out: dict[int, dict[str, int]] = {}
    for sid, state, n in conn.execute(q):
        out.setdefault(sid, {s.name: 0 for s in TrialState})[_state(state)] = int(n)
    if study is not None:
        out.setdefault(study, {s.name: 0 for s in TrialState})
    return out


def paused_count(conn: sa.Connection, study: int) -> int:
    """Trials asha paused (WAITING with the system attr ``hpo:paused``): they may resume."""
    attrs = models.TrialSystemAttributeModel.__table__
    q = (
        sa.select(sa.func.count())
        .select_from(_trials.join(attrs, attrs.c.trial_id == _trials.c.trial_id))
        .where(_trials.c.study_id == study, _trials.c.state == TrialState.WAITING, attrs.c.key == studies.SYS_PAUSED)
    )
    return int(conn.execute(q).scalar() or 0)


def _primary() -> Any:
    """The trial_values rows of the primary objective that can be ranked (finite)."""
    return sa.and_(_values.c.trial_id == _trials.c.trial_id, _values.c.objective == 0, _values.c.value_type == _FINITE)


def best_trial(conn: sa.Connection, study: int, direction: str) -> tuple[int, int, float] | None:
    """(trial_id, number, value) of the COMPLETE trial with the best finite primary value, the earliest on a
    tie (``hpo.study.select_best``'s rule), by one ``ORDER BY ... LIMIT 1``; None if there is none."""
    order = _values.c.value.desc() if direction == "maximize" else _values.c.value.asc()
    row = conn.execute(
        sa.select(_trials.c.trial_id, _trials.c.number, _values.c.value)
        .join(_values, _primary())
        .where(_trials.c.study_id == study, _trials.c.state == TrialState.COMPLETE)
        .order_by(order, _trials.c.number)
        .limit(1)
    ).first()
    return None if row is None else (int(row[0]), int(row[1]), float(row[2]))


def best_per_study(conn: sa.Connection, directions: dict[int, str]) -> dict[int, tuple[int, float]]:
    """Each study's best (number, primary value): one ``MIN``/``MAX`` per direction over every study, then the
    earliest trial that reached it."""
    out: dict[int, tuple[int, float]] = {}
    for direction in ("minimize", "maximize"):
        ids = [sid for sid, d in directions.items() if d == direction]
        if not ids:
            continue
        agg = sa.func.max(_values.c.value) if direction == "maximize" else sa.func.min(_values.c.value)
        best = (
            sa.select(_trials.c.study_id.label("sid"), agg.label("v"))
            .join(_values, _primary())
            .where(_trials.c.study_id.in_(ids), _trials.c.state == TrialState.COMPLETE)
            .group_by(_trials.c.study_id)
            .subquery()
        )
        q = (
            sa.select(_trials.c.study_id, sa.func.min(_trials.c.number), best.c.v)
            .join(_values, _primary())
            .join(best, sa.and_(best.c.sid == _trials.c.study_id, best.c.v == _values.c.value))
            .where(_trials.c.state == TrialState.COMPLETE)
            .group_by(_trials.c.study_id, best.c.v)
        )
        for sid, number, value in conn.execute(q):
            out[int(sid)] = (int(number), float(value))
    return out


def _attr(key: str) -> Any:
    return (
        sa.select(_attrs.c.value_json)
        .where(_attrs.c.trial_id == _trials.c.trial_id, _attrs.c.key == key)
        .limit(1)
        .scalar_subquery()
    )


def _configured_epochs(dialect: str) -> Any:
    """The ``epochs`` of a trial's recorded training config, extracted by the database (not the whole JSON)."""
    raw = (
        sa.select(_attrs.c.value_json)
        .where(_attrs.c.trial_id == _trials.c.trial_id, _attrs.c.key == studies.ATTR_TRAIN_CONFIG)
        .limit(1)
        .scalar_subquery()
    )
    return _json_field(raw, "epochs", dialect)


def facts(
    conn: sa.Connection, study: int, trial_ids: Iterable[int] | None = None, *, reasons: bool = True
) -> list[Facts]:
    """One narrow row per trial (or per ``trial_ids``), by number: state, primary value, epochs run (hpo's attr,
    else the count of intermediate values, else hpo's multi-objective curve), configured epochs, duration
    (hpo's attr, else complete - start) and the fail reason."""
    steps = (
        sa.select(sa.func.count()).select_from(_inter).where(_inter.c.trial_id == _trials.c.trial_id).scalar_subquery()
    )
    value = sa.select(_values.c.value).where(_primary()).limit(1).scalar_subquery()
    q = sa.select(
        _trials.c.trial_id,
        _trials.c.number,
        _trials.c.state,
        value,
        _attr(studies.ATTR_EPOCHS_RUN),
        steps,
        _configured_epochs(conn.dialect.name),
        _attr(studies.ATTR_DURATION),
        _trials.c.datetime_start,
        _trials.c.datetime_complete,
        _attr(studies.ATTR_FAIL_REASON) if reasons else sa.null(),
    ).where(_trials.c.study_id == study)
    if trial_ids is not None:
        q = q.where(_trials.c.trial_id.in_(list(trial_ids)))
    rows = list(conn.execute(q.order_by(_trials.c.number)))
    no_epochs = [r[0] for r in rows if r[4] is None and not r[5]]
    curves = _curve_lengths(conn, no_epochs) if no_epochs else {}
    out = []
    for tid, number, state, v, epochs_json, n_steps, max_epochs, duration_json, start, complete, reason in rows:
        epochs = json.loads(epochs_json) if epochs_json is not None else None
        if epochs is None:
            epochs = n_steps or curves.get(tid, 0)
        duration = json.loads(duration_json) if duration_json is not None else None
        if duration is None and start is not None and complete is not None:
            duration = (complete - start).total_seconds()
        out.append(
            Facts(
                trial_id=int(tid),
                number=int(number),
                state=_state(state),
                value=float(v) if v is not None and math.isfinite(v) else None,
                epochs_run=int(epochs),
                max_epochs=_int_or_none(max_epochs),
                duration_s=float(duration) if duration is not None else None,
                reason=None if reason is None else json.loads(reason),
            )
        )
    return out


def totals(rows: Sequence[Facts]) -> Totals:
    """The compute a study spent and its budget, as ``hpo.views.status.summarize`` counts them."""
    done = [r for r in rows if r.state in ("COMPLETE", "PRUNED", "FAIL")]
    budget = sum(r.max_epochs or r.epochs_run for r in done)
    return Totals(
        trial_seconds=sum(r.duration_s or 0.0 for r in rows if r.state != TrialState.RUNNING.name),
        epochs_run=sum(r.epochs_run for r in rows),
        epochs_budget=budget,
        epochs_saved=max(0, budget - sum(r.epochs_run for r in done)),
    )


def study_totals(conn: sa.Connection, study: int) -> tuple[dict[str, int], Totals]:
    """Trials by state and ``totals`` of every trial, by one ``GROUP BY state`` over a narrow per-trial
    expression (hpo's attrs by key, the step count only where ``epochs_run`` is missing): no row per trial
    leaves the database, except trials whose epochs only hpo's multi-objective curve records."""
    dialect = conn.dialect.name
    ep, cfg, dur = _attrs.alias("ep"), _attrs.alias("cfg"), _attrs.alias("dur")
    steps = (
        sa.select(sa.func.count()).select_from(_inter).where(_inter.c.trial_id == _trials.c.trial_id).scalar_subquery()
    )
    epochs = sa.func.coalesce(_number(ep.c.value_json), steps)
    configured = sa.cast(_json_field(cfg.c.value_json, "epochs", dialect), sa.Float)
    seconds = sa.func.coalesce(
        _number(dur.c.value_json), _elapsed_s(_trials.c.datetime_start, _trials.c.datetime_complete, dialect)
    )
    per_trial = (
        sa.select(
            _trials.c.state.label("state"),
            epochs.label("epochs"),
            sa.func.coalesce(sa.func.nullif(configured, 0), epochs).label("budget"),
            seconds.label("seconds"),
        )
        .select_from(
            _trials.outerjoin(ep, _keyed(ep, studies.ATTR_EPOCHS_RUN))
            .outerjoin(cfg, _keyed(cfg, studies.ATTR_TRAIN_CONFIG))
            .outerjoin(dur, _keyed(dur, studies.ATTR_DURATION))
        )
        .where(_trials.c.study_id == study)
        .subquery()
    )
    q = sa.select(
        per_trial.c.state,
        sa.func.count(),
        sa.func.sum(per_trial.c.epochs),
        sa.func.sum(per_trial.c.budget),
        sa.func.sum(per_trial.c.seconds),
    ).group_by(per_trial.c.state)
    counts = {s.name: 0 for s in TrialState}
    done = ("COMPLETE", "PRUNED", "FAIL")
    run = run_done = budget = 0
    seconds_total = 0.0
    for state, n, e, b, sec in conn.execute(q):
        name = _state(state)
        counts[name] = int(n)
        run += int(e or 0)
        if name in done:
            run_done += int(e or 0)
            budget += int(b or 0)
        if name != TrialState.RUNNING.name:
            seconds_total += float(sec or 0.0)
    # trials with neither ``epochs_run`` nor steps (a multi-objective study's): their curve attr's length
    for state, raw, conf in conn.execute(
        sa.select(_trials.c.state, _attrs.c.value_json, configured)
        .select_from(
            _trials.join(_attrs, _keyed(_attrs, studies.ATTR_CURVE)).outerjoin(
                cfg, _keyed(cfg, studies.ATTR_TRAIN_CONFIG)
            )
        )
        .where(
            _trials.c.study_id == study,
            ~sa.exists().where(_keyed(ep, studies.ATTR_EPOCHS_RUN)),
            ~sa.exists().where(_inter.c.trial_id == _trials.c.trial_id),
        )
    ):
        n_curve = len(json.loads(raw) or {})
        run += n_curve
        if _state(state) in done:
            run_done += n_curve
            budget += 0 if conf else n_curve
    return counts, Totals(
        trial_seconds=seconds_total, epochs_run=run, epochs_budget=budget, epochs_saved=max(0, budget - run_done)
    )


def _keyed(alias: Any, key: str) -> Any:
    """The join condition of a trial and its user attr ``key`` (``alias``: of trial_user_attributes)."""
    return sa.and_(alias.c.trial_id == _trials.c.trial_id, alias.c.key == key)


def _number(value_json: Any) -> Any:
    """A user attr's JSON number (stored as text) as a float; JSON null as NULL."""
    return sa.cast(sa.func.nullif(value_json, "null"), sa.Float)


def _json_field(raw: Any, field: str, dialect: str) -> Any:
    """A field of a JSON object stored as text, extracted by the database."""
    if dialect == "postgresql":
        return sa.cast(raw, sa.JSON)[field].as_string()  # CAST(... AS JSON) ->> 'field'
    return sa.func.json_extract(raw, f"$.{field}")  # SQLite, MySQL


def _elapsed_s(start: Any, end: Any, dialect: str) -> Any:
    """Seconds from ``start`` to ``end`` (NULL when either is), to the microsecond, in the database's dialect."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    if dialect == "sqlite":  # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff": whole seconds, then the fraction

        def whole(t: Any) -> Any:
            return sa.cast(sa.func.strftime("%s", sa.func.substr(t, 1, 19)), sa.Integer)

        def frac(t: Any) -> Any:
            return sa.cast(sa.func.substr(t, 20), sa.Float)

        return whole(end) - whole(start) + frac(end) - frac(start)
    return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, end) / 1e6  # MySQL


def _curve_lengths(conn: sa.Connection, trial_ids: Sequence[int]) -> dict[int, int]:
    q = sa.select(_attrs.c.trial_id, _attrs.c.value_json).where(
        _attrs.c.trial_id.in_(trial_ids), _attrs.c.key == studies.ATTR_CURVE
    )
    return {int(tid): len(json.loads(raw) or {}) for tid, raw in conn.execute(q)}


# ---------------------------------------------------------------------------------------------------
# Bounded lists


def trial_numbers(conn: sa.Connection, study: int) -> list[tuple[int, int]]:
    """(trial_id, number) of every trial of ``study``, by number."""
    q = sa.select(_trials.c.trial_id, _trials.c.number).where(_trials.c.study_id == study).order_by(_trials.c.number)
    return [(int(tid), int(n)) for tid, n in conn.execute(q)]


def top_trial_ids(
    conn: sa.Connection, study: int, direction: str, limit: int | None, *, failed_first: bool = False
) -> list[int]:
    """The trials with the best primary values first (ties and trials without a value by number), any state,
    by one ``ORDER BY ... LIMIT``; ``failed_first``: the FAIL trials before them, by number (the order of
    ``hpo status``'s table, ``hpo.views.status.status_order``)."""
    value = sa.select(_values.c.value).where(_primary()).limit(1).scalar_subquery().label("v")
    order = value.desc() if direction == "maximize" else value.asc()
    keys = [sa.case((value.is_(None), 1), else_=0), order, _trials.c.number]
    if failed_first:
        keys.insert(0, sa.case((_trials.c.state == TrialState.FAIL, 0), else_=1))
    q = sa.select(_trials.c.trial_id, value).where(_trials.c.study_id == study).order_by(*keys)
    if limit is not None:
        q = q.limit(limit)
    return [int(r[0]) for r in conn.execute(q)]


def params_of(conn: sa.Connection, trial_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The params of ``trial_ids`` in Optuna's external form (a categorical's choice, not its index)."""
    out: dict[int, dict[str, Any]] = {tid: {} for tid in trial_ids}
    if not trial_ids:
        return out
    cache: dict[str, Any] = {}
    q = (
        sa.select(_params.c.trial_id, _params.c.param_name, _params.c.param_value, _params.c.distribution_json)
        .where(_params.c.trial_id.in_(list(trial_ids)))
        .order_by(_params.c.param_id)
    )
    for tid, name, value, dist_json in conn.execute(q):
        dist = cache.get(dist_json)
        if dist is None:
            dist = cache[dist_json] = json_to_distribution(dist_json)
        out[int(tid)][name] = dist.to_external_repr(value)
    return out


def complete_values(conn: sa.Connection, study: int, n_objectives: int) -> dict[int, tuple[int, list[float]]]:
    """trial_id -> (number, values) of every COMPLETE trial with all ``n_objectives`` values (±inf kept)."""
    q = (
        sa.select(_trials.c.trial_id, _trials.c.number, _values.c.objective, _values.c.value, _values.c.value_type)
        .join(_values, _values.c.trial_id == _trials.c.trial_id)
        .where(_trials.c.study_id == study, _trials.c.state == TrialState.COMPLETE)
    )
    out: dict[int, tuple[int, list[float]]] = {}
    for tid, number, objective, value, kind in conn.execute(q):
        if not 0 <= objective < n_objectives:
            continue
        v = float(value) if kind == _FINITE else math.inf if kind == _INF_POS else -math.inf
        out.setdefault(int(tid), (int(number), [math.nan] * n_objectives))[1][objective] = v
    return {tid: nv for tid, nv in out.items() if not any(math.isnan(x) for x in nv[1])}


def pareto_front(points: dict[int, tuple[int, list[float]]], directions: Sequence[str]) -> list[int]:
    """The trial ids on the Pareto front of ``points`` (trial_id -> (number, values)), by number: the trials no
    other trial dominates (at least as good in every objective and better in one), as Optuna's
    ``Study.best_trials``. Duplicates of a front point are all on it."""
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    loss = {tid: tuple(s * v for s, v in zip(signs, values, strict=True)) for tid, (_, values) in points.items()}
    front: list[tuple[float, ...]] = []
    # in lexicographic order, a point can only be dominated by one before it, which is on the front if
    # anything is: one pass keeps the front
    for tid in sorted(loss, key=lambda t: loss[t]):
        p = loss[tid]
        if not any(_dominates(q, p) for q in front):
            front.append(p)
    on_front = set(front)
    return sorted((tid for tid, p in loss.items() if p in on_front), key=lambda t: points[t][0])


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _state(state: Any) -> str:
    return state.name if isinstance(state, TrialState) else str(state)


def _int_or_none(x: Any) -> int | None:
    if x is None:
        return None
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return None
