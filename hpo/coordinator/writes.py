"""The coordinator's writes that go around Optuna's public storage API: with ``hpo.coordinator.reads``, the
only modules that touch Optuna's private RDB models (``optuna.storages._rdb.models``). Checked on optuna 5.0;
on other databases, and where a guarded statement writes nothing, each call falls through to Optuna's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from optuna.trial import TrialState

#: Trial system attr: the token of the ask (or retry) that created the trial, so a retried create finds it.
TOKEN_KEY = "hpo:create_token"


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
        import sqlalchemy

        attrs = self._models.TrialSystemAttributeModel.__table__
        trials = self._models.TrialModel.__table__
        query = (
            sqlalchemy.select(attrs.c.trial_id)
            .join(trials, trials.c.trial_id == attrs.c.trial_id)
            .where(trials.c.study_id == study_id, attrs.c.key == TOKEN_KEY, attrs.c.value_json == json.dumps(token))
            .limit(1)
        )
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else int(found)
