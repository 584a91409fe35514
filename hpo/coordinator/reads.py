"""What a coordinator reads of the study, by plain SQL over Optuna's tables (``optuna.storages._rdb.models``,
like ``hpo.coordinator.writes``) instead of Optuna's ORM reads, which build every trial whole (params,
values, every intermediate value, user and system attrs): 8 s at 10,000 trials of 20 steps on PostgreSQL.

- At start (``load_state``): only what its pruner's state loads (``PrunerRule.loads`` and ``reads``): the
  median and percentile rules the COMPLETE trials' intermediate values, counted and sorted per step by the
  database (``step_statistics``); successive halving and Hyperband every trial's ``completed_rung_<i>``
  attrs and the last step of the COMPLETE trials (``pruning_records``: records in the shape the states load,
  ``hpo.coordinator.pruning.TrialRecord``). Either way the state equals one loaded from Optuna's trials.
- At the first ask (``fill_trial_cache``): the whole study, which Optuna's sampler and waiting-trial lookup
  read through the storage's cache anyway, into that cache, as Optuna's own read would put it there.

``tests/test_coordinator_start.py`` checks both against Optuna's reads.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.coordinator.pruning import RUNG_PREFIX, PercentileState, PrunerRule, PrunerState, StepStatistics
from hpo.study import ATTR_CURVE


@dataclass(frozen=True)
class LoadedTrial:
    """A trial as a pruner's state loads it (see ``TrialRecord``): only the fields the rule reads are filled."""

    number: int
    state: TrialState
    intermediate_values: dict[int, float] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


def load_state(state: PrunerState, engine: Any, study_id: int, rule: PrunerRule, *, multi_objective: bool) -> None:
    """Load a new pruner ``state`` from the study: the median and percentile rules' per-step statistics
    straight from SQL (each step's values sorted by the database), the others from ``pruning_records``."""
    if isinstance(state, PercentileState) and not multi_objective:
        state.stats = step_statistics(engine, study_id)
    else:
        state.load(pruning_records(engine, study_id, rule, multi_objective=multi_objective))


def step_statistics(engine: Any, study_id: int) -> StepStatistics:
    """The COMPLETE trials' intermediate values by step (``StepStatistics``): the trials counted, then one row
    per step with its values counted (NaN and infinities included) and, on PostgreSQL, its finite values as
    one array sorted by the server; elsewhere the finite values come sorted by a third query."""
    import sqlalchemy
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    ivs = models.TrialIntermediateValueModel.__table__
    kinds = models.TrialIntermediateValueModel.TrialIntermediateValueType
    kind, value = ivs.c.intermediate_value_type, ivs.c.intermediate_value
    complete = (trials.c.study_id == study_id, trials.c.state == TrialState.COMPLETE)
    joined = ivs.join(trials, trials.c.trial_id == ivs.c.trial_id)

    def n_of(k: Any) -> Any:
        return sqlalchemy.func.sum(sqlalchemy.case((kind == k, 1), else_=0))

    columns = [ivs.c.step, sqlalchemy.func.count(), n_of(kinds.INF_NEG), n_of(kinds.INF_POS)]
    arrays = engine.dialect.name == "postgresql"
    if arrays:
        from sqlalchemy.dialects import postgresql

        columns.append(postgresql.array_agg(postgresql.aggregate_order_by(value, value)).filter(kind == kinds.FINITE))
    per_step = sqlalchemy.select(*columns).select_from(joined).where(*complete).group_by(ivs.c.step)
    finite = (
        sqlalchemy.select(ivs.c.step, value)
        .select_from(joined)
        .where(*complete, kind == kinds.FINITE)
        .order_by(ivs.c.step, value)
    )
    counts: dict[int, int] = {}
    infinite: dict[int, tuple[int, int]] = {}  # step -> (-inf count, +inf count)
    values: dict[int, list[float]] = {}
    with _snapshot(engine) as conn:
        n_trials = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).where(*complete)).scalar() or 0
        for step, n, low, high, *sorted_values in conn.execute(per_step):
            counts[step], infinite[step] = n, (int(low), int(high))
            if arrays:
                values[step] = list(sorted_values[0] or [])
        if not arrays:
            for step, rows in itertools.groupby(conn.execute(finite), key=operator.itemgetter(0)):
                values[step] = [v for _, v in rows]
    for step, (low, high) in infinite.items():
        if low or high:
            values[step] = [-math.inf] * low + values.get(step, []) + [math.inf] * high
    return StepStatistics.from_sorted(n_trials, counts, values)


def pruning_records(engine: Any, study_id: int, rule: PrunerRule, *, multi_objective: bool) -> list[LoadedTrial]:
    """The study's trials in ``rule.loads`` states, with what ``rule.reads`` asks for: ``"values"`` every
    intermediate value; ``"last_step"`` every trial's rung attrs, and the last step (and its value) of the
    COMPLETE trial that went furthest, the one step the state keeps of them (the other records have no
    values). A multi-objective trial's curve is hpo's user attr where it has no intermediate values."""
    import sqlalchemy
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    ivs = models.TrialIntermediateValueModel.__table__
    mine = [trials.c.study_id == study_id]
    if rule.loads is not None:
        mine.append(trials.c.state.in_([TrialState[s] for s in rule.loads]))
    last_only = rule.reads == "last_step"
    # whose values are read: every loaded trial's, or (last_step) the COMPLETE ones'
    valued = [*mine, trials.c.state == TrialState.COMPLETE] if last_only else mine

    iv_query = sqlalchemy.select(ivs.c.trial_id, ivs.c.step, ivs.c.intermediate_value, ivs.c.intermediate_value_type)
    iv_query = iv_query.join(trials, trials.c.trial_id == ivs.c.trial_id).where(*valued)
    if last_only:  # the state keeps only the largest last step of a COMPLETE trial: one row
        iv_query = iv_query.order_by(ivs.c.step.desc(), ivs.c.trial_id).limit(1)

    values: dict[int, dict[int, float]] = {}
    attrs: dict[int, dict[str, Any]] = {}
    to_float = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    with _snapshot(engine) as conn:
        trial_rows = sqlalchemy.select(trials.c.trial_id, trials.c.number, trials.c.state).where(*mine)
        rows = conn.execute(trial_rows.order_by(trials.c.trial_id)).all()
        for trial_id, step, stored, kind in conn.execute(iv_query):
            values.setdefault(trial_id, {})[step] = to_float(stored, kind)
        if multi_objective:
            curves = _attr_query(models.TrialUserAttributeModel, valued, attrs_key=ATTR_CURVE)
            for trial_id, _, raw in conn.execute(curves):
                if trial_id not in values:
                    values[trial_id] = _curve(json.loads(raw), last_only)
        if last_only:
            rungs = _attr_query(models.TrialSystemAttributeModel, mine, prefix=RUNG_PREFIX)
            for trial_id, key, raw in conn.execute(rungs):
                attrs.setdefault(trial_id, {})[key] = json.loads(raw)
    return [
        LoadedTrial(number, TrialState(state), values.get(trial_id, {}), attrs.get(trial_id, {}))
        for trial_id, number, state in rows
    ]


def _snapshot(engine: Any) -> Any:
    """A connection whose queries all see one snapshot of the database on PostgreSQL, so counts and values
    agree (on SQLite the sweep's lease keeps other writers of the study out while it starts)."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def _attr_query(model: Any, where: list[Any], *, attrs_key: str | None = None, prefix: str | None = None) -> Any:
    """(trial_id, key, value_json) of the attrs (``model``: user or system) named ``attrs_key``, or starting
    with ``prefix``, of the trials ``where`` selects."""
    import sqlalchemy
    from optuna.storages._rdb import models

    attrs, trials = model.__table__, models.TrialModel.__table__
    matches = attrs.c.key == attrs_key if prefix is None else attrs.c.key.startswith(prefix, autoescape=True)
    return (
        sqlalchemy.select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json)
        .join(trials, trials.c.trial_id == attrs.c.trial_id)
        .where(*where, matches)
    )


def _curve(raw: Mapping[str, Any], last_only: bool) -> dict[int, float]:
    """hpo's stored curve (``{"<step>": value}``, non-finite values as strings) as intermediate values."""
    curve = {int(k): float(v) for k, v in raw.items()}
    if last_only and curve:
        step = max(curve)
        return {step: curve[step]}
    return curve


def fill_trial_cache(storage: Any, study_id: int) -> bool:
    """Read every trial of the study into the cache of Optuna's ``_CachedStorage`` (the study's storage), as
    its own first read would, by one plain SQL query per table instead of Optuna's ORM: the first ask of a
    sweep (Optuna's ``_pop_waiting_trial_id``, then the sampler) reads the whole study, 8-12 s at 10,000
    trials of 20 steps through the ORM, about a tenth of that here. Later reads are Optuna's own (only
    trials created or unfinished since). Returns False, and does nothing, where the cache holds the study
    already or the storage is not the one checked here (Optuna 5.0's ``_CachedStorage`` over ``RDBStorage``).
    """
    backend = getattr(storage, "_backend", None)
    engine = getattr(backend, "engine", None)
    studies = getattr(storage, "_studies", None)
    if engine is None or not isinstance(studies, dict) or _has_read(studies.get(study_id)):
        return False
    from optuna.storages._cached_storage import _StudyInfo

    trials = all_trials(engine, study_id)
    with storage._lock:
        info = studies.setdefault(study_id, _StudyInfo())  # it may hold the study's name and directions
        if _has_read(info):
            return False
        storage._add_trials_to_cache(study_id, trials)
        for t in trials:  # Optuna's bookkeeping (``_read_trials_from_remote_storage``)
            if t.state.is_finished():
                info.last_finished_trial_id = max(info.last_finished_trial_id, t._trial_id)
            else:
                info.unfinished_trial_ids.add(t._trial_id)
    return True


def _has_read(info: Any) -> bool:
    """Whether Optuna's cache has read the study's trials (a study's entry also caches its name and directions)."""
    return info is not None and bool(info.trials or info.unfinished_trial_ids or info.last_finished_trial_id >= 0)


def all_trials(engine: Any, study_id: int) -> list[FrozenTrial]:
    """Every trial of the study, whole, equal to Optuna's ``RDBStorage._get_trials`` (and built as its
    ``_build_frozen_trial_from_trial_model`` builds them), in trial id order. The trials are read first: a
    trial created meanwhile is left for Optuna's next read, and a finished trial's rows were committed with
    its state, before this read began."""
    import sqlalchemy
    from optuna import distributions
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    ours = trials.c.study_id == study_id

    def rows(model: Any, *columns: str, order: str | None = None) -> Any:
        table = model.__table__
        query = sqlalchemy.select(*(table.c[c] for c in columns)).join(trials, trials.c.trial_id == table.c.trial_id)
        return conn.execute(query.where(ours).order_by(table.c[order] if order else None))

    by_id: dict[int, dict[str, Any]] = {}
    with _snapshot(engine) as conn:
        for r in conn.execute(sqlalchemy.select(trials).where(ours).order_by(trials.c.trial_id)):
            by_id[r.trial_id] = {"row": r, "values": {}, "params": {}, "dists": {}, "user": {}, "system": {}, "iv": {}}
        to_value = models.TrialValueModel.stored_repr_to_value
        for trial_id, objective, value, kind in rows(
            models.TrialValueModel, "trial_id", "objective", "value", "value_type"
        ):
            if trial_id in by_id:
                by_id[trial_id]["values"][objective] = to_value(value, kind)
        parsed: dict[str, Any] = {}  # a study's params share a few distributions
        params = rows(
            models.TrialParamModel, "trial_id", "param_name", "param_value", "distribution_json", order="param_id"
        )
        for trial_id, name, value, dist_json in params:
            if trial_id in by_id:
                dist = parsed.get(dist_json) or parsed.setdefault(
                    dist_json, distributions.json_to_distribution(dist_json)
                )
                by_id[trial_id]["params"][name] = dist.to_external_repr(value)
                by_id[trial_id]["dists"][name] = dist
        for model, key in ((models.TrialUserAttributeModel, "user"), (models.TrialSystemAttributeModel, "system")):
            for trial_id, name, raw in rows(model, "trial_id", "key", "value_json"):
                if trial_id in by_id:
                    by_id[trial_id][key][name] = json.loads(raw)
        to_float = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
        ivs = rows(
            models.TrialIntermediateValueModel, "trial_id", "step", "intermediate_value", "intermediate_value_type"
        )
        for trial_id, step, value, kind in ivs:
            if trial_id in by_id:
                by_id[trial_id]["iv"][step] = to_float(value, kind)
    return [_frozen(parts) for parts in by_id.values()]


def _frozen(parts: dict[str, Any]) -> FrozenTrial:
    r, values = parts["row"], parts["values"]
    return FrozenTrial(
        number=r.number,
        state=r.state,
        value=None,
        values=[values[i] for i in range(len(values))] if values else None,
        datetime_start=r.datetime_start,
        datetime_complete=r.datetime_complete,
        params=parts["params"],
        distributions=parts["dists"],
        user_attrs=parts["user"],
        system_attrs=parts["system"],
        intermediate_values=parts["iv"],
        trial_id=r.trial_id,
    )


def study_system_attr(storage: Any, study_id: int, key: str) -> Any:
    """One system attr of the study (``hpo stop``'s request, ``hpo.sweep.stop.STOP_KEY``), by one small query on a
    database (Optuna's ``get_study_system_attrs`` reads every one, the lease and the fingerprint included);
    through Optuna's API on any other storage. None when it is not set."""
    import sqlalchemy
    from optuna.storages._rdb import models

    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return storage.get_study_system_attrs(study_id).get(key)
    attrs = models.StudySystemAttributeModel.__table__
    with engine.connect() as conn:
        raw = conn.execute(
            sqlalchemy.select(attrs.c.value_json).where(attrs.c.study_id == study_id, attrs.c.key == key)
        ).scalar_one_or_none()
    return None if raw is None else json.loads(raw)
