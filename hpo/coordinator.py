"""The coordinator: the one storage client of a running sweep.

It runs as a Ray actor on the driver's node (``hpo.dispatch`` wraps it); workers reach it through
Ray, so they need no database credentials, and the sweep's database connections are this object's
pool whatever the number of workers. It asks trials (Optuna's sampler), records every epoch's metric
as the trial's intermediate value, answers "prune?" with Optuna's median rule from statistics it keeps
up to date (``hpo.pruning``), and tells trials their final state.

It is a plain class so tests and benchmarks can use it in-process, without Ray.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from hpo import lease
from hpo import study as studies
from hpo.pruning import MedianRule, StepStatistics, should_prune
from storage import close_storage, open_storage, redact, retry_transient, storage_errors
from trials.config import merge_dotted

log = logging.getLogger("hpo.coordinator")
T = TypeVar("T")

CONTINUE = "continue"
PRUNE = "prune"


@dataclass
class LiveTrial:
    """What the coordinator knows of a trial it asked and has not told yet."""

    trial_id: int
    number: int
    params: dict[str, Any]
    started: float
    max_steps: int | None = None
    values: dict[int, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Asked:
    trial_id: int
    number: int
    params: dict[str, Any]
    train_config: dict[str, Any]
    checkpoint_dir: str
    resume_from: str | None = None  # checkpoint folder of the failed trial this one retries


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the driver saw it."""

    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str | None = None  # FAIL only
    attrs: dict[str, Any] = field(default_factory=dict)


class Coordinator:
    """Owns the study (one bounded storage pool) for one sweep."""

    def __init__(
        self,
        storage_url: str,
        study_name: str,
        *,
        metric: str,
        direction: str,
        distributions: Mapping[str, BaseDistribution],
        base_config: dict[str, Any],
        fixed_params: Mapping[str, Any],
        checkpoint_root: str,
        sampler: str = "tpe",
        seed: int | None = None,
        rule: MedianRule | None = None,
        parallel: int = 1,
        retry_timeout: float = 60.0,
        driver_lease: dict[str, Any] | None = None,
        connect: bool = True,
    ) -> None:
        """``connect=False`` only keeps the settings: ``connect()`` then opens the storage and loads the study.
        The actor is made that way, so that its process starts while the driver prepares the study."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._url = storage_url
        self._study_name = study_name
        self._sampler, self._seed = sampler, seed
        self._parallel = parallel
        self._retry_timeout = retry_timeout
        self._metric = metric
        self._direction = direction
        self._distributions = dict(distributions)
        self._base = base_config
        self._fixed = dict(fixed_params)
        self._root = checkpoint_root.rstrip("/")
        self._rule = rule
        self._stats = StepStatistics()
        self._live: dict[int, LiveTrial] = {}
        self._lease = driver_lease  # the driver's (host, pid): renewed here while the sweep runs
        if connect:
            self.connect()  # a lease another sweep took shows at the first heartbeat

    def connect(self) -> bool:
        """Open the storage (one bounded pool), load the study and the per-step statistics of its COMPLETE
        trials, and renew the sweep's lease: False when another sweep has taken it (see ``heartbeat``)."""
        url = self._url
        # the driver created the schema and checked its version just before
        self._storage = self._retry(lambda: open_storage(url, create_schema=False, check_version=False))
        pruner = self._rule.to_optuna() if self._rule else optuna.pruners.NopPruner()
        self._study = self._retry(
            lambda: optuna.load_study(
                study_name=self._study_name,
                storage=self._storage,
                sampler=studies.make_sampler(self._sampler, self._seed, parallel=self._parallel),
                pruner=pruner,  # type: ignore[arg-type]
            )
        )
        self._writes = _Writes(self._study._storage)
        for t in self._retry(lambda: self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
            self._stats.add_trial(t.intermediate_values)
        return self.heartbeat()

    # ----------------------------------------------------------------------------------------------
    def ask(self) -> Asked:
        """A new trial with params from the sampler, and its full training config."""
        trial = self._retry(lambda: self._study.ask(self._distributions))
        return self._register(trial, attempt=1)

    def fail_and_retry(self, trial_id: int, outcome: Outcome, attempt: int) -> tuple[dict[str, Any], Asked]:
        """Tell a failed trial FAIL and create its retry: a new trial with the same params that resumes from
        the failed trial's last checkpoint. The two are linked both ways (``retried_by``/``retry_of``) before
        the failed trial is finished, since Optuna freezes a trial's attrs once it is."""
        failed = self._retry(lambda: self._study._storage.get_trial(trial_id))
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=failed.params, distributions=failed.distributions
        )
        study_id = self._study._study_id
        new_id = self._retry(lambda: self._study._storage.create_new_trial(study_id, template_trial=template))
        asked = self._register(
            optuna.Trial(self._study, new_id),
            attempt=attempt,
            retry_of=failed.number,
            resume_from=failed.user_attrs.get(studies.ATTR_CHECKPOINT_DIR),
        )
        attrs = {**outcome.attrs, studies.ATTR_RETRIED_BY: asked.number}
        summary = self.tell(trial_id, Outcome(outcome.state, outcome.value, outcome.reason, attrs))
        summary["retried_by"] = asked.number
        return summary, asked

    def reap(self, trial_ids: list[int], reason: str, retries: int) -> tuple[list[int], list[tuple[Asked, int]]]:
        """Fail trials a lost driver left RUNNING; retry those with attempts left, and rerun those no worker
        ever started (asked ahead) without spending an attempt. Returns the reaped trial numbers and the
        retries to launch, each with its attempt number."""
        reaped, retries_out = [], []
        for tid in trial_ids:
            t = self._retry(lambda tid=tid: self._study._storage.get_trial(tid))  # type: ignore[misc]
            if t.state != TrialState.RUNNING:
                continue
            attempt = int(t.user_attrs.get(studies.ATTR_ATTEMPT, 1))
            if studies.ATTR_NODE not in t.user_attrs and not t.intermediate_values:
                # asked ahead but never started by a worker: it ran nothing, so its rerun spends no attempt
                _, asked = self.fail_and_retry(tid, Outcome("FAIL", None, f"{reason} (never started)"), attempt)
                retries_out.append((asked, attempt))
                reaped.append(t.number)
                continue
            outcome = Outcome("FAIL", None, reason)
            if attempt <= retries:
                _, asked = self.fail_and_retry(tid, outcome, attempt + 1)
                retries_out.append((asked, attempt + 1))
            else:
                self.tell(tid, outcome)
            reaped.append(t.number)
        return reaped, retries_out

    def _register(
        self, trial: optuna.Trial, *, attempt: int, retry_of: int | None = None, resume_from: str | None = None
    ) -> Asked:
        params = dict(trial.params)
        config = merge_dotted(self._base, {**self._fixed, **params})
        ckpt = f"{self._root}/trial-{trial.number:05d}"
        attrs: dict[str, Any] = {
            studies.ATTR_TRAIN_CONFIG: config,
            studies.ATTR_CHECKPOINT_DIR: ckpt,
            studies.ATTR_ATTEMPT: attempt,
        }
        if retry_of is not None:
            attrs[studies.ATTR_RETRY_OF] = retry_of
        tid = trial._trial_id
        self._retry(lambda: self._writes.user_attrs(tid, attrs))
        self._live[tid] = LiveTrial(tid, trial.number, params, time.time(), max_steps=config.get("epochs"))
        return Asked(tid, trial.number, params, config, ckpt, resume_from)

    def started(self, trial_id: int, node: dict[str, Any]) -> None:
        """A worker picked the trial up: record where it runs (node id, host, process id, GPUs)."""
        self._retry(lambda: self._study._storage.set_trial_user_attr(trial_id, studies.ATTR_NODE, node))

    def report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> str:
        """Record ``metrics[metric]`` as the trial's value at ``step``; answer ``"prune"`` or ``"continue"``."""
        live = self._live.get(trial_id)
        if live is None:
            # told already (the driver gave up on it) or never asked here: tell the worker to stop
            return PRUNE
        value = float(metrics[self._metric])
        self._retry(lambda: self._writes.intermediate_value(trial_id, step, value))
        live.values[step] = value
        live.last_metrics = {"epoch": float(step), **{k: float(v) for k, v in metrics.items()}}
        if live.max_steps is not None and step >= live.max_steps:
            return CONTINUE  # the last epoch: pruning now would save nothing and throw a finished run away
        if self._rule is not None and should_prune(self._rule, self._stats, live.values, self._direction):
            return PRUNE
        return CONTINUE

    def tell(self, trial_id: int, outcome: Outcome) -> dict[str, Any]:
        """Finish a trial; returns a summary for the driver's progress output."""
        live = self._live.pop(trial_id, None)
        storage = self._study._storage
        attrs = dict(outcome.attrs)
        if outcome.reason:
            attrs[studies.ATTR_FAIL_REASON] = outcome.reason
        self._retry(lambda: self._writes.user_attrs(trial_id, attrs))
        state = TrialState[outcome.state]
        value = outcome.value
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
            self._retry(
                lambda: storage.set_trial_user_attr(
                    trial_id, studies.ATTR_FAIL_REASON, f"final {self._metric} is {value}, not a finite number"
                )
            )
        number = live.number if live else self._retry(lambda: storage.get_trial(trial_id)).number
        # Study.tell reads the trial back after it is told: that is the final state, no need to read it again
        final = self._retry(
            lambda: self._study.tell(
                number,
                values=value if state == TrialState.COMPLETE else None,
                state=state,
                skip_if_finished=True,
            )
        )
        if state == TrialState.COMPLETE and live is not None:
            self._stats.add_trial(live.values)
        elif state == TrialState.COMPLETE:
            self._stats.add_trial(final.intermediate_values)
        return {
            "number": final.number,
            "state": final.state.name,
            "value": final.value,
            "params": dict(final.params),
            "steps": len(final.intermediate_values),
            "reason": final.user_attrs.get(studies.ATTR_FAIL_REASON),
        }

    def heartbeat(self) -> bool:
        """Renew the sweep's lease on the study; False if another sweep has taken it."""
        if self._lease is None:
            return True
        storage, study_id = self._study._storage, self._study._study_id
        held = self._retry(lambda: lease.read(storage, study_id))
        if held and held.get("owner") != self._lease["owner"]:
            return False
        renewed = {**self._lease, "heartbeat": time.time()}
        self._retry(lambda: lease.write(storage, study_id, renewed))
        return True

    def live(self) -> list[dict[str, Any]]:
        """The running trials: number, params, seconds running, last epoch's metrics."""
        now = time.time()
        return [
            {"number": t.number, "params": t.params, "running_s": now - t.started, **t.last_metrics}
            for t in sorted(self._live.values(), key=lambda t: t.number)
        ]

    def summary(self) -> dict[str, Any]:
        """Counts by state and the best trial so far (from the warm cache)."""
        trials = self._retry(lambda: self._study.get_trials(deepcopy=False))
        best = studies.select_best(trials, self._direction)
        return {
            "counts": studies.state_counts(trials),
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        }

    def close(self) -> bool:
        """Give the sweep's lease up (if it still holds it) and close the storage. True when the lease is no
        longer this sweep's, released here or taken by another sweep: the driver need not open a storage
        to release it."""
        released = False
        storage, study = getattr(self, "_storage", None), getattr(self, "_study", None)
        if storage is None:
            return False
        try:
            if self._lease is not None and study is not None:
                study_id = study._study_id
                held = lease.read(storage, study_id)
                if held and held.get("owner") == self._lease["owner"]:
                    lease.write(storage, study_id, None)
                released = True
        except Exception as e:  # the database may be gone: the driver tries again, then the lease expires
            log.warning("could not release the study's lease: %s", redact(str(e).splitlines()[0], self._url))
        finally:
            close_storage(storage)
        return released

    # ----------------------------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        def on_retry(elapsed: float, e: BaseException) -> None:
            log.warning(
                "storage unavailable for %.0fs, retrying: %s", elapsed, redact(str(e).splitlines()[0], self._url)
            )

        with storage_errors(self._url, "storage error on"):  # past the timeout: one masked line, StorageError
            return retry_transient(fn, timeout=self._retry_timeout, on_retry=on_retry)


class _Writes:
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
        import json

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
