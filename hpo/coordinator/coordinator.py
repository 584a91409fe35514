"""The coordinator: the one storage client of a running sweep.

It runs as a Ray actor on the driver's node (``hpo.coordinator.actor``); workers reach it through Ray, so
they need no database credentials, and the sweep's database connections are this object's pool whatever
the number of workers. It asks trials (Optuna's sampler), records every epoch's metric as the trial's
intermediate value, answers "prune?" with the sweep's Optuna pruner from statistics it keeps up to date
(``hpo.coordinator.pruning``), and tells trials their final state.

Every write it retries after a lost connection is idempotent: a trial is created with a token written in
the same transaction, and a retried create finds it instead of creating a second; a failed trial's retry is
keyed by the failed trial, so asking for it twice gives the same trial.

It is a plain class so tests and benchmarks can use it in-process, without Ray.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from hpo import study as studies
from hpo.coordinator import reads
from hpo.coordinator.messages import Asked, FailureKind, Outcome, Told
from hpo.coordinator.pruning import PrunerState
from hpo.coordinator.sampling import LearnsFromGpuMemory
from hpo.coordinator.settings import CoordinatorSettings
from hpo.coordinator.writes import TOKEN_KEY, Writes
from hpo.ranking import primary
from hpo.space import sample, trial_config
from hpo.sweep import lease
from storage import close_storage, open_storage, redact, retry_transient, storage_errors
from trials.reporting import CONTINUE, PRUNE

log = logging.getLogger("hpo.coordinator")
T = TypeVar("T")


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


class Coordinator:
    """Owns the study (one bounded storage pool) for one sweep."""

    def __init__(self, settings: CoordinatorSettings, *, connect: bool = True) -> None:
        """``connect=False`` only keeps the settings: ``connect()`` then opens the storage and loads the study.
        The actor is made that way, so that its process starts while the driver prepares the study."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.settings = settings
        self._root = settings.checkpoint_root.rstrip("/")
        self._pruner: PrunerState | None = None  # the rule's state, loaded at connect
        self._live: dict[int, LiveTrial] = {}
        if connect:
            self.connect()

    def connect(self) -> bool:
        """Open the storage (one bounded pool), load the study and the pruner's state from its trials (only
        what the pruner reads: ``hpo.coordinator.reads``), and renew the sweep's lease: False when another
        sweep has taken it (see ``heartbeat``)."""
        s = self.settings
        # the driver created the schema and checked its version just before
        self._storage = self._retry(lambda: open_storage(s.storage_url, create_schema=False, check_version=False))
        pruner = s.rule.to_optuna() if s.rule else optuna.pruners.NopPruner()
        self._study = self._retry(
            lambda: optuna.load_study(
                study_name=s.study_name,
                storage=self._storage,
                sampler=LearnsFromGpuMemory(
                    studies.make_sampler(
                        s.sampler,
                        s.seed,
                        parallel=s.parallel,
                        conditional=bool(s.conditions),
                        startup_trials=s.startup_trials,
                    )
                ),
                pruner=pruner,  # type: ignore[arg-type]
            )
        )
        self._writes = Writes(self._study._storage)
        if s.rule is not None:
            self._retry(self._load_pruner)
        return self.heartbeat()

    def _load_pruner(self) -> None:
        """A new pruner state loaded from the study: on a database, from only the columns and rows it reads
        (``hpo.coordinator.reads``); elsewhere (a storage without an engine) from Optuna's trials."""
        s, study = self.settings, self._study
        assert s.rule is not None
        self._pruner = state = s.rule.new_state(s.direction, s.study_name)
        engine = getattr(getattr(study._storage, "_backend", None), "engine", None)
        if engine is not None:
            reads.load_state(state, engine, study._study_id, s.rule, multi_objective=s.multi_objective)
            return
        states = None if s.rule.loads is None else tuple(TrialState[name] for name in s.rule.loads)
        trials = study.get_trials(deepcopy=False, states=states)
        state.load([studies.with_curve(t) for t in trials] if s.multi_objective else trials)

    # ----------------------------------------------------------------------------------------------
    def ask(self) -> Asked:
        """A new trial (an enqueued one first) with params from the sampler, and its full training config.
        The first one reads the whole study into the storage's cache (Optuna does, for the waiting trials and
        the sampler): by plain SQL (``reads.fill_trial_cache``), not at start."""
        study = self._study
        self._retry(lambda: reads.fill_trial_cache(study._storage, study._study_id))
        trial_id = self._create(uuid.uuid4().hex, params=None, existing=False)
        trial = self._retry(lambda: optuna.Trial(self._study, trial_id))
        s = self.settings
        params = sample(
            s.distributions,
            s.conditions,
            s.base_config,
            lambda name, dist: self._retry(lambda: trial._suggest(name, dist)),
        )
        return self._register(trial_id, trial.number, params, attempt=1)

    def _create(self, token: str, params: tuple[dict[str, Any], dict[str, Any]] | None, *, existing: bool) -> int:
        """The trial created with ``token``, retried through lost connections: an earlier try's if it committed,
        else an enqueued trial (plain asks only) or a new RUNNING one, the token written in the same
        transaction. ``existing``: the token may predate this call (a retry keyed by the trial it retries), so
        even the first try looks it up; a fresh token is looked up only when a try is repeated."""
        tries = 0

        def once() -> int:
            nonlocal tries
            tries += 1
            if existing or tries > 1:
                found = self._writes.trial_with_token(self._study._study_id, token)
                if found is not None:
                    return found
            return self._create_new(token, params)

        return self._retry(once)

    def _create_new(self, token: str, params: tuple[dict[str, Any], dict[str, Any]] | None) -> int:
        study_id = self._study._study_id
        if params is None:
            self._study._thread_local.cached_all_trials = None  # as Study.ask: sync once per trial
            waiting = self._study._pop_waiting_trial_id()
            if waiting is not None:
                return int(waiting)
        values, dists = params or ({}, {})
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=values, distributions=dists, system_attrs={TOKEN_KEY: token}
        )
        return int(self._study._storage.create_new_trial(study_id, template_trial=template))

    def fail_and_retry(self, trial_id: int, outcome: Outcome) -> tuple[Told, Asked]:
        """Tell a failed trial FAIL and create its retry: a new trial with the same params that resumes from
        the failed trial's last checkpoint, one attempt further on. The two are linked both ways
        (``retried_by``/``retry_of``) before the failed trial is finished, since Optuna freezes a trial's
        attrs once it is. Idempotent: the retry is keyed by the failed trial, so a second call (after a lost
        connection, or a reap of a half-done retry) finds the same retry."""
        failed = self._retry(lambda: self._study._storage.get_trial(trial_id))
        attempt = int(failed.user_attrs.get(studies.ATTR_ATTEMPT, 1))
        if outcome.kind is FailureKind.INFRA:
            attempt += 1  # a rerun of what never started spends no attempt
        token = f"retry-of:{trial_id}"
        new_id = self._create(token, params=(failed.params, failed.distributions), existing=True)
        number = self._retry(lambda: self._study._storage.get_trial_number_from_id(new_id))
        asked = self._register(
            new_id,
            number,
            dict(failed.params),
            attempt=attempt,
            retry_of=failed.number,
            resume_from=failed.user_attrs.get(studies.ATTR_CHECKPOINT_DIR),
        )
        told = self.tell(trial_id, replace(outcome, attrs={**outcome.attrs, studies.ATTR_RETRIED_BY: number}))
        return replace(told, retried_by=number), asked

    def reap(self, trial_ids: list[int], reason: str, retries: int, limit: int) -> tuple[list[int], list[Asked]]:
        """Fail trials a lost driver left RUNNING. At most ``limit`` of them run again (the sweep's remaining
        target): those no worker ever started (asked ahead) without spending an attempt, the others while
        they have attempts left. Returns the reaped trial numbers and the retries to launch."""
        reaped: list[int] = []
        retried: list[Asked] = []
        for tid in trial_ids:
            t = self._retry(lambda tid=tid: self._study._storage.get_trial(tid))  # type: ignore[misc]
            if t.state != TrialState.RUNNING:
                continue
            attempt = int(t.user_attrs.get(studies.ATTR_ATTEMPT, 1))
            never_started = studies.ATTR_NODE not in t.user_attrs and not studies.curve(t)
            kind = FailureKind.NOT_STARTED if never_started else FailureKind.INFRA
            outcome = Outcome.fail(kind, f"{reason} (never started)" if never_started else reason)
            if len(retried) < limit and (never_started or attempt <= retries):
                retried.append(self.fail_and_retry(tid, outcome)[1])
            else:
                self.tell(tid, outcome)
            reaped.append(t.number)
        return reaped, retried

    def _register(
        self,
        trial_id: int,
        number: int,
        params: dict[str, Any],
        *,
        attempt: int,
        retry_of: int | None = None,
        resume_from: str | None = None,
    ) -> Asked:
        s = self.settings
        config = trial_config(s.base_config, s.fixed_params, params)
        ckpt = f"{self._root}/trial-{number:05d}"
        attrs: dict[str, Any] = {
            studies.ATTR_TRAIN_CONFIG: config,
            studies.ATTR_CHECKPOINT_DIR: ckpt,
            studies.ATTR_ATTEMPT: attempt,
        }
        if retry_of is not None:
            attrs[studies.ATTR_RETRY_OF] = retry_of
        self._retry(lambda: self._writes.user_attrs(trial_id, attrs))
        self._live[trial_id] = LiveTrial(trial_id, number, params, time.time(), max_steps=config.get("epochs"))
        return Asked(trial_id, number, params, config, ckpt, resume_from, attempt)

    def started(self, trial_id: int, node: dict[str, Any]) -> bool:
        """A worker picked the trial up: record where it runs (node id, host, process id, GPUs). False, and
        nothing written, when the trial is no longer running here (told already): the worker stops."""
        if trial_id not in self._live:
            return False
        self._retry(lambda: self._writes.user_attrs(trial_id, {studies.ATTR_NODE: node}))
        return True

    def report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> str:
        """Record ``metrics[metric]`` as the trial's value at ``step``; answer ``"prune"`` or ``"continue"``."""
        live = self._live.get(trial_id)
        if live is None:
            # told already (the driver gave up on it) or never asked here: tell the worker to stop
            return PRUNE
        s = self.settings
        value = float(metrics[s.metric])
        live.values[step] = value
        if s.multi_objective:
            curve = {str(k): v if math.isfinite(v) else str(v) for k, v in live.values.items()}
            self._retry(lambda: self._writes.user_attrs(trial_id, {studies.ATTR_CURVE: curve}))
        else:
            self._retry(lambda: self._writes.intermediate_value(trial_id, step, value))
        live.last_metrics = {"epoch": float(step), **{k: float(v) for k, v in metrics.items()}}
        if self._pruner is None:
            return CONTINUE
        decision = self._pruner.report(live.number, live.values)
        for key, rung_value in decision.system_attrs.items():  # Optuna's completed_rung_<i>: one per rung reached
            self._retry(lambda k=key, v=rung_value: self._study._storage.set_trial_system_attr(trial_id, k, v))  # type: ignore[misc]
        if live.max_steps is not None and step >= live.max_steps:
            return CONTINUE  # the last epoch: pruning now would save nothing and throw a finished run away
        return PRUNE if decision.prune else CONTINUE

    def tell(self, trial_id: int, outcome: Outcome) -> Told:
        """Finish a trial (a trial finished already is left as it is); returns its summary."""
        live = self._live.pop(trial_id, None)
        storage = self._study._storage
        attrs = dict(outcome.attrs)
        state = TrialState[outcome.state]
        value = outcome.value
        reason = outcome.reason
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state, reason = TrialState.FAIL, f"final {self.settings.metric} is {value}, not a finite number"
        if reason:
            attrs[studies.ATTR_FAIL_REASON] = reason
        if outcome.kind is not None:
            attrs[studies.ATTR_FAIL_KIND] = outcome.kind.value
        try:
            self._retry(lambda: self._writes.user_attrs(trial_id, attrs))
        except optuna.exceptions.UpdateFinishedTrialError:  # told already (a repeated call): left as it is
            return self._told(self._retry(lambda: storage.get_trial(trial_id)))
        number = live.number if live else self._retry(lambda: storage.get_trial_number_from_id(trial_id))
        # Study.tell reads the trial back after it is told: that is the final state, no need to read it again
        final = self._retry(
            lambda: self._study.tell(
                number,
                values=(list(outcome.values) if outcome.values else value) if state == TrialState.COMPLETE else None,
                state=state,
                skip_if_finished=True,
            )
        )
        if self._pruner is not None and final.state == state:  # told here, not before
            values = live.values if live is not None else studies.curve(final)
            self._pruner.finished(final.number, final.state.name, values)
        return self._told(final)

    @staticmethod
    def _told(final: optuna.trial.FrozenTrial) -> Told:
        return Told(
            final.number,
            final.state.name,
            primary(final),
            dict(final.params),
            len(studies.curve(final)),
            final.user_attrs.get(studies.ATTR_FAIL_REASON),
        )

    def heartbeat(self) -> bool:
        """Renew the sweep's lease on the study; False if another sweep has taken it."""
        mine = self.settings.lease
        if mine is None:
            return True
        study_id = self._study._study_id
        return self._retry(lambda: lease.renew(self.settings.storage_url, self._storage, study_id, mine))

    def live(self) -> list[dict[str, Any]]:
        """The running trials: number, params, seconds running, last epoch's metrics."""
        now = time.time()
        return [
            {"number": t.number, "params": t.params, "running_s": now - t.started, **t.last_metrics}
            for t in sorted(self._live.values(), key=lambda t: t.number)
        ]

    def close(self) -> bool:
        """Give the sweep's lease up (if it still holds it) and close the storage. True when the lease is no
        longer this sweep's, released here or taken by another sweep: the driver need not open a storage
        to release it."""
        storage, study = getattr(self, "_storage", None), getattr(self, "_study", None)
        if storage is None:
            return False
        mine = self.settings.lease
        try:
            if mine is not None and study is not None:
                return lease.release(self.settings.storage_url, storage, study._study_id, mine["owner"])
            return True
        except Exception as e:  # the database may be gone: the driver tries again, then the lease expires
            log.warning("could not release the study's lease: %s", self._redact(e))
            return False
        finally:
            close_storage(storage)

    # ----------------------------------------------------------------------------------------------
    def _redact(self, e: BaseException) -> str:
        return redact((str(e).splitlines() or [type(e).__name__])[0], self.settings.storage_url)

    def _retry(self, fn: Callable[[], T]) -> T:
        def on_retry(elapsed: float, e: BaseException) -> None:
            log.warning("storage unavailable for %.0fs, retrying: %s", elapsed, self._redact(e))

        url, timeout = self.settings.storage_url, self.settings.retry_timeout
        with storage_errors(url, "storage error on"):  # past the timeout: one masked line, StorageError
            return retry_transient(fn, timeout=timeout, on_retry=on_retry)
