"""The coordinator's writes that go around Optuna's public storage API: with ``hpo.coordinator.reads`` and
``hpo.sweep.lease`` (the lease's compare-and-swap on the study's system attr), the only modules that touch
Optuna's private RDB models (``optuna.storages._rdb.models``). Checked on optuna 5.0;
on other databases, and where a guarded statement writes nothing, each hot write falls through to Optuna's
own. A trial's creation goes around Optuna on every database (``Writes.create_trial``): Optuna's retries its
own transaction after a lost connection, and a commit whose answer was lost then made a second trial.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpo.study import SYS_PAUSED, is_paused

#: Trial system attr: the token of the ask (or retry) that created the trial, so a retried create finds it.
TOKEN_KEY = "hpo:create_token"

#: A new trial's ``(params, distributions)`` (a retry's, its failed trial's).
Params = tuple[dict[str, Any], dict[str, Any]]


class Writes:
    """The coordinator's two frequent writes, each in one transaction and one statement where the database
    allows it (PostgreSQL, SQLite): an intermediate value per epoch, and a trial's user attrs at ask and tell.

    Optuna's ``RDBStorage`` spends five round trips on an intermediate value (ORM reads of the trial and of
    the step, then an insert) and one transaction per user attr; on PostgreSQL that is about half of a
    report's latency and ten transactions per trial. The rows written are the ones Optuna writes (its
    models and stored representations), and a finished trial is refused as Optuna refuses it: when the
    guarded statement writes nothing, the call falls through to Optuna's, which raises its own error.
    Other databases use Optuna's calls as they are.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage  # the study's (cached) storage: the fallback, and the owner of the engine
        backend = getattr(storage, "_backend", storage)
        engine = getattr(backend, "engine", None)
        dialect = engine.dialect.name if engine is not None else None
        self._engine = engine if dialect in ("postgresql", "sqlite") else None
        if self._engine is not None:
            from optuna.storages._rdb import models
            from sqlalchemy.dialects import postgresql, sqlite

            # both dialects' insert has on_conflict_do_update with the same arguments
            self._insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
            self._models = models

    def _updatable(self, trial_id: int) -> Any:
        """SQL: the trial exists and is not finished (Optuna's ``check_trial_is_updatable``)."""
        import sqlalchemy

        trials = self._models.TrialModel.__table__
        return sqlalchemy.exists().where(
            trials.c.trial_id == trial_id, trials.c.state.in_([TrialState.RUNNING, TrialState.WAITING])
        )

    def intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        if self._engine is None:
            self._storage.set_trial_intermediate_value(trial_id, step, value)
            return
        import sqlalchemy

        model = self._models.TrialIntermediateValueModel
        table = model.__table__
        stored, kind = model.intermediate_value_to_stored_repr(value)
        row = sqlalchemy.select(
            sqlalchemy.literal(trial_id),
            sqlalchemy.literal(step),
            sqlalchemy.literal(stored, type_=table.c.intermediate_value.type),
            sqlalchemy.literal(kind, type_=table.c.intermediate_value_type.type),
        ).where(self._updatable(trial_id))
        stmt = self._insert(table).from_select(
            ["trial_id", "step", "intermediate_value", "intermediate_value_type"], row
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.step],
            set_={
                "intermediate_value": stmt.excluded.intermediate_value,
                "intermediate_value_type": stmt.excluded.intermediate_value_type,
            },
        )
        with self._engine.begin() as conn:
            written = conn.execute(stmt).rowcount
        if written != 1:  # finished or unknown trial: Optuna's own call raises the error it would raise
            self._storage.set_trial_intermediate_value(trial_id, step, value)

    def user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        if not attrs:
            return
        if self._engine is None:
            for key, value in attrs.items():
                self._storage.set_trial_user_attr(trial_id, key, value)
            return

        import sqlalchemy

        table = self._models.TrialUserAttributeModel.__table__
        stmt = self._insert(table).values(
            [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key], set_={"value_json": stmt.excluded.value_json}
        )
        with self._engine.begin() as conn:
            if conn.execute(sqlalchemy.select(self._updatable(trial_id))).scalar():
                conn.execute(stmt)
                return
        for key, value in attrs.items():  # finished or unknown trial: Optuna's own call raises its error
            self._storage.set_trial_user_attr(trial_id, key, value)

    def trial_with_token(self, study_id: int, token: str) -> int | None:
        """The id of the study's trial created with ``token`` (see ``TOKEN_KEY``), or None."""
        if self._engine is None:
            for t in self._storage.get_all_trials(study_id, deepcopy=False):
                if t.system_attrs.get(TOKEN_KEY) == token:
                    return int(t._trial_id)
            return None
        with self._engine.connect() as conn:
            found = conn.execute(_token_query(study_id, token)).scalar()
        return None if found is None else int(found)

    def create_trial(self, study_id: int, token: str, params: Params | None, *, look_up: bool) -> int:
        """The trial created with ``token``, made so that a lost commit answer cannot make a second one.

        ``params`` None (a plain ask): an enqueued (WAITING) trial taken from the queue first, else a new
        RUNNING trial without params; otherwise a new RUNNING trial with these ``(values, distributions)``.
        The token is written in the transaction that creates or takes the trial, and ``look_up`` (a repeated
        try, or a token that may predate the call) looks it up first in that same transaction, under the
        study row's lock that Optuna's creates take too. Optuna's ``create_new_trial`` is not used on a
        database: it retries its own transaction after a lost connection, and so made a second trial with
        the same token when the first had committed (and its pop of a waiting trial wrote no token). The
        rows are written by Optuna's own ORM code (``_get_prepared_new_trial``), and the new or taken trial
        is put in the storage's cache as Optuna's ``create_new_trial`` does.
        """
        backend = getattr(self._storage, "_backend", self._storage)
        if getattr(backend, "scoped_session", None) is None or not hasattr(backend, "_get_prepared_new_trial"):
            return self._create_by_api(study_id, token, params, look_up=look_up)
        from optuna.storages._rdb.storage import _create_scoped_session

        models = _rdb_models()
        frozen: FrozenTrial | None = None
        with _create_scoped_session(backend.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial_id = session.execute(_token_query(study_id, token)).scalar() if look_up else None
            if trial_id is None and params is None:
                trial_id = _take_waiting(session, backend, study_id, token)
            if trial_id is None:
                template = _template(token, params)
                row = backend._get_prepared_new_trial(study_id, template, session)
                session.flush()
                frozen = copy.deepcopy(template)  # as Optuna's ``_create_frozen_trial``
                frozen.number, frozen.datetime_start, frozen._trial_id = row.number, row.datetime_start, row.trial_id
                trial_id = row.trial_id
        self._cache(study_id, int(trial_id), frozen)
        return int(trial_id)

    def _create_by_api(self, study_id: int, token: str, params: Params | None, *, look_up: bool) -> int:
        """``create_trial`` on a storage that is not a database (no connection to lose): Optuna's calls."""
        storage = self._storage
        found = self.trial_with_token(study_id, token) if look_up else None
        if found is not None:
            return found
        if params is None:
            for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
                if is_paused(t) or SYS_PAUSED in t.system_attrs:
                    continue  # paused by asha: resumed by the coordinator, never taken as an enqueued trial
                try:
                    if not storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                        continue
                except UpdateFinishedTrialError:
                    continue
                storage.set_trial_system_attr(t._trial_id, TOKEN_KEY, token)
                return int(t._trial_id)
        return int(storage.create_new_trial(study_id, template_trial=_template(token, params)))

    def _cache(self, study_id: int, trial_id: int, frozen: FrozenTrial | None) -> None:
        """Put a trial created or taken by ``create_trial`` in Optuna's ``_CachedStorage`` (its ``set_trial_param``
        needs the trial there), marked unfinished so that Optuna's next read refreshes it."""
        storage = self._storage
        if not hasattr(storage, "_add_trials_to_cache") or not isinstance(getattr(storage, "_studies", None), dict):
            return
        if frozen is None:
            if trial_id in storage._trial_id_to_study_id_and_number:
                return  # cached already (a waiting trial): Optuna reads unfinished trials again
            frozen = storage._backend.get_trial(trial_id)
        from optuna.storages._cached_storage import _StudyInfo

        with storage._lock:
            info = storage._studies.setdefault(study_id, _StudyInfo())
            storage._add_trials_to_cache(study_id, [frozen])
            if not frozen.state.is_finished():
                info.unfinished_trial_ids.add(trial_id)


def _rdb_models() -> Any:
    from optuna.storages._rdb import models

    return models


def _token_query(study_id: int, token: str) -> Any:
    """SQL: the id of the study's trial whose ``TOKEN_KEY`` system attr is ``token``."""
    import sqlalchemy

    models = _rdb_models()
    attrs = models.TrialSystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    return (
        sqlalchemy.select(attrs.c.trial_id)
        .join(trials, trials.c.trial_id == attrs.c.trial_id)
        .where(trials.c.study_id == study_id, attrs.c.key == TOKEN_KEY, attrs.c.value_json == json.dumps(token))
        .limit(1)
    )


def _take_waiting(session: Any, backend: Any, study_id: int, token: str) -> int | None:
    """In the caller's transaction: the study's first enqueued (WAITING) trial set RUNNING, as Optuna's
    ``Study._pop_waiting_trial_id`` does, with the token written beside it; None when the queue is empty. A
    trial asha paused (WAITING with ``hpo:paused``) is not an enqueued one: the coordinator resumes it."""
    import sqlalchemy

    models = _rdb_models()
    attrs = models.TrialSystemAttributeModel
    paused = sqlalchemy.exists().where(attrs.trial_id == models.TrialModel.trial_id, attrs.key == SYS_PAUSED)
    trial = (
        session.query(models.TrialModel)
        .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.WAITING, ~paused)
        .order_by(models.TrialModel.trial_id)
        .with_for_update()
        .first()
    )
    if trial is None:
        return None
    trial.state = TrialState.RUNNING
    trial.datetime_start = datetime.now()  # naive local time, as Optuna's ``set_trial_state_values``
    backend._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, trial.trial_id, TOKEN_KEY, token)
    return int(trial.trial_id)


def _template(token: str, params: Params | None) -> FrozenTrial:
    values, dists = params or ({}, {})
    return create_trial(state=TrialState.RUNNING, params=values, distributions=dists, system_attrs={TOKEN_KEY: token})
