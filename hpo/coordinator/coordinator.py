"""The coordinator: the one storage client of a running sweep.

It runs as a Ray actor on the driver's node (``hpo.coordinator.actor``); workers reach it through Ray, so
they need no database credentials, and the sweep's database connections are this object's pool whatever
the number of workers. It asks trials (Optuna's sampler), records every epoch's metric as the trial's
intermediate value, answers "prune?" with the sweep's Optuna pruner from statistics it keeps up to date
(``hpo.coordinator.pruning``), and tells trials their final state. With ``pruner: {type: asha}`` it answers
"pause?" instead, stores paused trials (WAITING), resumes them when they are promoted, and gives them up
(PRUNED) when they cannot be (``hpo.coordinator.paused``).

Every write it retries after a lost connection is idempotent: a trial is created with a token written in
the same transaction, and a retried create finds it instead of creating a second; a failed trial's retry is
keyed by the failed trial, so asking for it twice gives the same trial.

It writes only while its sweep holds the study's lease, renewed by a thread of its own (``lease.Keeper``):
every call that writes first checks that the lease record is still the one this sweep wrote last, and once
it is not (taken over, or not renewed within its TTL), ask, tell, retry and reap raise ``LeaseLostError``,
reports answer "prune", and nothing more is written.

It is a plain class so tests and benchmarks can use it in-process, without Ray.
"""

from __future__ import annotations

import contextlib
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
from hpo.coordinator.messages import Asked, FailureKind, Outcome, Reaped, Told
from hpo.coordinator.paused import PausedTrial, Promotions, pruned_value, remove_checkpoint
from hpo.coordinator.promotion import PromotionRule
from hpo.coordinator.pruning import PrunerState
from hpo.coordinator.sampling import LearnsFromGpuMemory
from hpo.coordinator.settings import CoordinatorSettings
from hpo.coordinator.writes import TOKEN_KEY, Params, Writes
from hpo.errors import LeaseLostError
from hpo.ranking import primary
from hpo.space import sample, trial_config
from hpo.sweep import lease
from storage import close_storage, open_storage, redact, retry_transient, storage_errors
from trials.reporting import CONTINUE, PAUSE, PRUNE

log = logging.getLogger("hpo.coordinator")
T = TypeVar("T")
RETRY_TOKEN = "retry-of:"  # a retry's creation token: this prefix and the id of the trial it retries


def retry_target(t: optuna.trial.FrozenTrial) -> int | None:
    """The id of the trial that ``t`` retries, from its creation token; None for a trial that retries none."""
    token = t.system_attrs.get(TOKEN_KEY)
    if isinstance(token, str) and token.startswith(RETRY_TOKEN) and token[len(RETRY_TOKEN) :].isdigit():
        return int(token[len(RETRY_TOKEN) :])
    return None


def _never_started(t: optuna.trial.FrozenTrial) -> bool:
    """No worker picked the trial up: it recorded no node and reported no epoch."""
    return studies.ATTR_NODE not in t.user_attrs and not studies.curve(t)


def _lost(t: optuna.trial.FrozenTrial, reason: str) -> Outcome:
    """How a trial left RUNNING by a lost driver is told: it never started, or its driver was lost."""
    if _never_started(t):
        return Outcome.fail(FailureKind.NOT_STARTED, f"{reason} (never started)")
    return Outcome.fail(FailureKind.LOST, reason)


@dataclass
class _ReapPlan:
    """What a reap has done so far, and how many more trials may run again."""

    limit: int
    failed: list[int] = field(default_factory=list)
    to_run: list[Asked] = field(default_factory=list)
    created: int = 0
    resumed_stopped: list[int] = field(default_factory=list)

    def room(self) -> bool:
        return len(self.to_run) < self.limit


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
    checkpoint_dir: str | None = None
    replayed_to: int | None = None  # a resumed paused trial: the epochs up to this one are replays, not news


class Coordinator:
    """Owns the study (one bounded storage pool) for one sweep."""

    def __init__(self, settings: CoordinatorSettings, *, connect: bool = True) -> None:
        """``connect=False`` only keeps the settings: ``connect()`` then opens the storage and loads the study.
        The actor is made that way, so that its process starts while the driver prepares the study."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.settings = settings
        self._root = settings.checkpoint_root.rstrip("/")
        self._pruner: PrunerState | None = None  # the rule's state, loaded at connect
        self._promotions: Promotions | None = None  # asha's state instead, loaded at connect
        self._live: dict[int, LiveTrial] = {}
        self._keeper: lease.Keeper | None = None  # renews the sweep's lease, and fences this coordinator
        if connect:
            self.connect()

    def connect(self) -> bool:
        """Open the storage (one bounded pool), load the study and the pruner's state from its trials (only
        what the pruner reads: ``hpo.coordinator.reads``), and renew the sweep's lease, from then on in a
        thread of its own (``lease.Keeper``): False when another sweep has taken it."""
        s = self.settings
        # the driver created the schema and checked its version just before
        self._storage = self._retry(lambda: open_storage(s.storage_url, create_schema=False, check_version=False))
        # asha is hpo's own (paused trials resume): Optuna's study gets no pruner for it
        optuna_rule = None if isinstance(s.rule, PromotionRule) else s.rule
        pruner = optuna_rule.to_optuna() if optuna_rule else optuna.pruners.NopPruner()
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
        return self._keep_lease()

    def _keep_lease(self) -> bool:
        mine, s = self.settings.lease, self.settings
        if mine is None:
            return True
        self._keeper = lease.Keeper(s.storage_url, self._study._study_id, mine, s.study_name)
        return self._retry(self._keeper.start)

    def _load_pruner(self) -> None:
        """A new pruner state loaded from the study: on a database, from only the columns and rows it reads
        (``hpo.coordinator.reads``); elsewhere (a storage without an engine) from Optuna's trials."""
        s, study = self.settings, self._study
        assert s.rule is not None
        if isinstance(s.rule, PromotionRule):
            epochs = int(s.base_config.get("epochs") or 1)
            self._promotions = Promotions.new(s.rule, s.direction, epochs, s.max_paused_bytes)
            self._promotions.load(study.get_trials(deepcopy=False))
            return
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
        self._fence()
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

    def _create(self, token: str, params: Params | None, *, existing: bool) -> int:
        """The trial created with ``token``, retried through lost connections: an earlier try's if it committed,
        else an enqueued trial (plain asks only) or a new RUNNING one, the token written in the transaction
        that creates or takes it (``Writes.create_trial``, which looks the token up in that same transaction).
        ``existing``: the token may predate this call (a retry keyed by the trial it retries), so even the
        first try looks it up; a fresh token is looked up only when a try is repeated."""
        tries = 0
        if params is None:
            self._study._thread_local.cached_all_trials = None  # as Study.ask: sync once per trial

        def once() -> int:
            nonlocal tries
            tries += 1
            look_up = existing or tries > 1
            return self._writes.create_trial(self._study._study_id, token, params, look_up=look_up)

        return self._retry(once)

    def fail_and_retry(self, trial_id: int, outcome: Outcome) -> tuple[Told, Asked]:
        """Tell a failed trial FAIL and create its retry: a new trial with the same params that resumes from
        the failed trial's last checkpoint, one attempt further on. The two are linked both ways
        (``retried_by``/``retry_of``) before the failed trial is finished, since Optuna freezes a trial's
        attrs once it is. Idempotent: the retry is keyed by the failed trial, so a second call (after a lost
        connection, or a reap of a half-done retry) finds the same retry."""
        self._fence()
        failed = self._trial(trial_id)
        attempt = int(failed.user_attrs.get(studies.ATTR_ATTEMPT, 1))
        if outcome.kind is not None and outcome.kind.spends_attempt:
            attempt += 1  # a rerun of what never started spends no attempt
        token = f"{RETRY_TOKEN}{trial_id}"
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

    def reap(self, trial_ids: list[int], reason: str, retries: int, limit: int) -> Reaped:
        """Fail the trials a lost driver left RUNNING, and resume those a terminated sweep stopped. At most
        ``limit`` trials run again (the sweep's remaining target): orphans no worker ever started (asked ahead)
        without spending an attempt, the others while they have attempts left, then the stopped ones.

        A half-done retry (the driver died inside ``fail_and_retry``, between creating retry Y of X and telling
        X) is finished, not repeated: X is told FAIL once, and Y itself runs, from X's checkpoint. A lost driver
        spends no failure budget: nothing here goes through the sweep's budget."""
        self._fence()
        orphans = {t._trial_id: t for t in self._trials(trial_ids) if t.state == TrialState.RUNNING}
        halves = self._half_done_retries(orphans)  # retry id -> the trial it retries
        plan = _ReapPlan(limit)
        retried = {x._trial_id for x in halves.values()}
        for tid, t in orphans.items():
            if tid in halves:
                self._resume_half_done(t, halves[tid], orphans, reason, plan)
            elif tid not in retried:
                self._reap_one(t, reason, retries, plan)
            # else: X of a half-done retry Y, told with Y
        self._resume_stopped(plan)
        return Reaped(plan.failed, plan.to_run, plan.created, plan.resumed_stopped)

    def _trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return self._retry(lambda: self._study._storage.get_trial(trial_id))

    def _trials(self, trial_ids: list[int]) -> list[optuna.trial.FrozenTrial]:
        return [self._trial(tid) for tid in trial_ids]

    def _half_done_retries(self, orphans: dict[int, optuna.trial.FrozenTrial]) -> dict[int, optuna.trial.FrozenTrial]:
        """The orphans no worker started that a retry token says retry another trial (an orphan too, or one
        told FAIL before the retry could start), each with that trial."""
        found: dict[int, optuna.trial.FrozenTrial] = {}
        for tid, t in orphans.items():
            of = retry_target(t)
            if of is None or of == tid or not _never_started(t):
                continue
            found[tid] = orphans[of] if of in orphans else self._trial(of)
        return found

    def _resume_half_done(
        self,
        retry: optuna.trial.FrozenTrial,
        failed: optuna.trial.FrozenTrial,
        orphans: dict[int, optuna.trial.FrozenTrial],
        reason: str,
        plan: _ReapPlan,
    ) -> None:
        """Run retry Y as it is, from the checkpoint of X, the trial it retries; tell X FAIL if it is still
        RUNNING (linked to Y). Past the limit, Y is told it never started, and X that its driver was lost."""
        if failed._trial_id in orphans:
            outcome = _lost(failed, reason)
            if plan.room():
                outcome = replace(outcome, attrs={studies.ATTR_RETRIED_BY: retry.number})
            self.tell(failed._trial_id, outcome)
            plan.failed.append(failed.number)
        if not plan.room():
            self.tell(retry._trial_id, Outcome.fail(FailureKind.NOT_STARTED, f"{reason} (never started)"))
            plan.failed.append(retry.number)
            return
        plan.to_run.append(
            self._register(
                retry._trial_id,
                retry.number,
                dict(retry.params),
                attempt=int(retry.user_attrs.get(studies.ATTR_ATTEMPT, 1)),
                retry_of=failed.number,
                resume_from=self._checkpoint_of(failed),
            )
        )

    def _reap_one(self, t: optuna.trial.FrozenTrial, reason: str, retries: int, plan: _ReapPlan) -> None:
        attempt = int(t.user_attrs.get(studies.ATTR_ATTEMPT, 1))
        outcome = _lost(t, reason)
        if plan.room() and (outcome.kind is FailureKind.NOT_STARTED or attempt <= retries):
            plan.to_run.append(self.fail_and_retry(t._trial_id, outcome)[1])
            plan.created += 1
        else:
            self.tell(t._trial_id, outcome)
        plan.failed.append(t.number)

    def _checkpoint_of(self, t: optuna.trial.FrozenTrial) -> str | None:
        """The folder holding ``t``'s progress: its own, or, for a retry that never started (stopped before it
        could), that of the trial it retries, and so on up the chain."""
        seen = {t._trial_id}
        while _never_started(t) and (of := retry_target(t)) is not None and of not in seen:
            seen.add(of)
            t = self._trial(of)
        return t.user_attrs.get(studies.ATTR_CHECKPOINT_DIR)

    def _resume_stopped(self, plan: _ReapPlan) -> None:
        """Trials a terminated sweep stopped (FAIL, kind ``stopped``) that no trial retries yet: each gets a
        retry keyed by it, from its checkpoint, with its own attempt (no attempt or budget spent)."""
        if not plan.room():
            return
        study_id = self._study._study_id
        fails = self._retry(lambda: self._study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        for x in fails:
            if not plan.room():
                return
            if x.user_attrs.get(studies.ATTR_FAIL_KIND) != FailureKind.STOPPED.value:
                continue
            token = f"{RETRY_TOKEN}{x._trial_id}"
            if self._retry(lambda token=token: self._writes.trial_with_token(study_id, token)) is not None:  # type: ignore[misc]
                continue  # resumed already (finished, or an orphan this reap has just handled)
            new_id = self._create(token, params=(x.params, x.distributions), existing=True)
            number = self._retry(lambda new_id=new_id: self._study._storage.get_trial_number_from_id(new_id))  # type: ignore[misc]
            attempt = int(x.user_attrs.get(studies.ATTR_ATTEMPT, 1))
            ckpt = self._checkpoint_of(x)
            plan.to_run.append(
                self._register(new_id, number, dict(x.params), attempt=attempt, retry_of=x.number, resume_from=ckpt)
            )
            plan.created += 1
            plan.resumed_stopped.append(x.number)

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
        self._live[trial_id] = LiveTrial(
            trial_id, number, params, time.time(), max_steps=config.get("epochs"), checkpoint_dir=ckpt
        )
        if self._promotions is not None:  # it may reach a rung: counted before its first report (``hopeless``)
            self._promotions.started(number)
        return Asked(trial_id, number, params, config, ckpt, resume_from, attempt)

    def started(self, trial_id: int, node: dict[str, Any]) -> bool:
        """A worker picked the trial up: record where it runs (node id, host, process id, GPUs). False, and
        nothing written, when the trial is no longer running here (told already, or the lease is lost): the
        worker stops."""
        if trial_id not in self._live or not self._may_write():
            return False
        self._retry(lambda: self._writes.user_attrs(trial_id, {studies.ATTR_NODE: node}))
        return True

    def report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> str:
        """Record ``metrics[metric]`` as the trial's value at ``step``; answer ``"prune"`` or ``"continue"``."""
        live = self._live.get(trial_id)
        if live is None or not self._may_write():
            # told already (the driver gave up on it), never asked here, or the lease lost: the worker stops
            return PRUNE
        s = self.settings
        if live.replayed_to is not None and step <= live.replayed_to and step in live.values:
            return CONTINUE  # a resumed trial replays its saved epochs: recorded and decided already
        value = float(metrics[s.metric])
        live.values[step] = value
        if s.multi_objective:
            curve = {str(k): v if math.isfinite(v) else str(v) for k, v in live.values.items()}
            self._retry(lambda: self._writes.user_attrs(trial_id, {studies.ATTR_CURVE: curve}))
        else:
            self._retry(lambda: self._writes.intermediate_value(trial_id, step, value))
        live.last_metrics = {"epoch": float(step), **{k: float(v) for k, v in metrics.items()}}
        if self._promotions is not None:
            pause = self._promotions.report(live.number, live.values)
            last = live.max_steps is not None and step >= live.max_steps
            return PAUSE if pause and not last else CONTINUE
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
        self._fence()
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
        if self._promotions is not None and final.state == state:
            self._promotions.finished(final.number)
        return self._told(final)

    # ---------------------------------------------------------------------------------------------- asha
    def pause(self, trial_id: int, outcome: Outcome) -> Told:
        """Store a trial whose worker returned paused (asha): its outcome's attrs and ``paused_at_epoch``, the
        system attr ``hpo:paused``, then state WAITING (a crash in between leaves it RUNNING: the next sweep
        reaps it). Its checkpoint stays for ``resume``. A trial not running here is left as it is."""
        self._fence()
        live = self._live.pop(trial_id, None)
        storage = self._study._storage
        if live is None or self._promotions is None:
            return self._told(self._trial(trial_id))
        epoch = max(live.values, default=0)
        attrs = {**outcome.attrs, studies.ATTR_PAUSED_AT: epoch}
        self._retry(lambda: self._writes.user_attrs(trial_id, attrs))
        self._retry(lambda: storage.set_trial_system_attr(trial_id, studies.SYS_PAUSED, epoch))
        self._retry(lambda: storage.set_trial_state_values(trial_id, TrialState.WAITING))
        self._promotions.paused(PausedTrial(trial_id, live.number, epoch, live.checkpoint_dir, dict(live.values)))
        return Told(live.number, "WAITING", None, dict(live.params), len(live.values), f"paused at epoch {epoch}")

    def resume(self) -> Asked | None:
        """The paused trial to promote now, set RUNNING again and registered with its values (its replayed
        epochs are neither written nor decided again), to run with its own checkpoint folder; None when no
        paused trial is promotable."""
        self._fence()
        p = self._promotions.next() if self._promotions is not None else None
        if p is None or self._promotions is None:
            return None
        storage = self._study._storage
        taken = self._retry(lambda: storage.set_trial_state_values(p.trial_id, TrialState.RUNNING))
        # not taken and not RUNNING: not WAITING any more, not ours to resume (RUNNING: an earlier try committed)
        if not taken and self._trial(p.trial_id).state != TrialState.RUNNING:
            self._promotions.finished(p.number)
            return None
        self._promotions.resumed(p.number)
        t = self._trial(p.trial_id)
        attempt = int(t.user_attrs.get(studies.ATTR_ATTEMPT, 1))
        asked = self._register(p.trial_id, p.number, dict(t.params), attempt=attempt, resume_from=p.checkpoint_dir)
        live = self._live[p.trial_id]
        live.values, live.replayed_to = {**studies.curve(t), **p.values}, p.epoch
        return replace(asked, paused_at=p.epoch)

    def give_up_paused(self, new_trials: float, everything: bool = False) -> list[Told]:
        """Tell PRUNED (reason in ``pruned_reason``), and delete the checkpoints of, the paused trials that can no
        longer be promoted with at most ``new_trials`` more trials, then the least promising while paused
        checkpoints take more than ``pruner.max_paused_gb``; ``everything``: all of them (the sweep ended)."""
        if self._promotions is None:
            return []
        self._fence()
        return [
            self._give_up(p, reason) for p, reason in self._promotions.to_give_up(new_trials, everything=everything)
        ]

    def _give_up(self, p: PausedTrial, reason: str) -> Told:
        storage = self._study._storage
        self._retry(lambda: self._writes.user_attrs(p.trial_id, {studies.ATTR_PRUNED_REASON: reason}))
        value = None if self.settings.multi_objective else pruned_value(p.values)

        def prune() -> None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # an earlier try committed
                storage.set_trial_state_values(p.trial_id, TrialState.PRUNED, None if value is None else [value])

        self._retry(prune)
        assert self._promotions is not None
        self._promotions.finished(p.number)
        remove_checkpoint(p.checkpoint_dir)
        return replace(self._told(self._trial(p.trial_id)), reason=reason)

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
        """True while the sweep holds its lease (renewed by the keeper's thread, so this waits for no database);
        ``LeaseLostError``, saying why, once it does not."""
        if self._keeper is not None:
            self._keeper.check()
        return True

    def stop_request(self) -> dict[str, Any] | None:
        """``hpo stop``'s request to this sweep (``hpo.sweep.stop``), or None: one small read, polled at the
        lease's heartbeat. A request left for an earlier sweep (another lease owner) is cleared here."""
        from hpo.sweep.stop import STOP_KEY, is_request_for

        storage, sid = self._study._storage, self._study._study_id
        value = self._retry(lambda: reads.study_system_attr(storage, sid, STOP_KEY))
        if value is None:
            return None
        if is_request_for(value, (self.settings.lease or {}).get("owner")):
            return dict(value)
        if self._may_write():
            self._retry(lambda: storage.set_study_system_attr(sid, STOP_KEY, None))
        return None

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
        to release it. False when the study was never loaded here: the driver releases it."""
        if self._keeper is not None:
            self._keeper.stop()
        storage, study = getattr(self, "_storage", None), getattr(self, "_study", None)
        if storage is None:
            return False
        mine = self.settings.lease
        try:
            if mine is None:
                return True
            if study is None:  # load_study failed: the lease the driver took is the driver's to give up
                return False
            return lease.release(self.settings.storage_url, storage, study._study_id, mine["owner"])
        except Exception as e:  # the database may be gone: the driver tries again, then the lease expires
            log.warning("could not release the study's lease: %s", self._redact(e))
            return False
        finally:
            close_storage(storage)

    # ----------------------------------------------------------------------------------------------
    def _redact(self, e: BaseException) -> str:
        return redact((str(e).splitlines() or [type(e).__name__])[0], self.settings.storage_url)

    def _fence(self) -> None:
        """Before a call that writes: ``LeaseLostError`` unless the lease record is still the one this sweep's
        keeper wrote last (one read), so that no write lands once another sweep has taken the study over."""
        keeper, engine = self._keeper, getattr(self._storage, "engine", None)
        if keeper is None:
            return
        if engine is None:
            keeper.check()
            return

        def verify() -> None:
            with engine.connect() as conn:
                keeper.verify(conn)

        self._retry(verify)

    def _may_write(self) -> bool:
        try:
            self._fence()
        except LeaseLostError:
            return False
        return True

    def _retry(self, fn: Callable[[], T]) -> T:
        """``fn`` retried through lost connections for up to ``retry_timeout``; each try refused
        (``LeaseLostError``) once the lease is known lost, so a retried write never lands after it."""

        def on_retry(elapsed: float, e: BaseException) -> None:
            log.warning("storage unavailable for %.0fs, retrying: %s", elapsed, self._redact(e))

        keeper = self._keeper

        def attempt() -> T:
            if keeper is not None:
                keeper.check()
            return fn()

        url, timeout = self.settings.storage_url, self.settings.retry_timeout
        with storage_errors(url, "storage error on"):  # past the timeout: one masked line, StorageError
            return retry_transient(attempt, timeout=timeout, on_retry=on_retry)
