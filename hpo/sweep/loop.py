"""The sweep loop: ask, dispatch on Ray, tell, until the study has its target of finished trials.

One ``step`` reads as the loop's contract: decide whether to stop launching, fill free slots, read what
came back, wait for a trial to end and tell it. The bookkeeping is the pure ``Ledger``; this class only
moves Ray object references around. The driver holds no database connection here: every read and write
goes through the coordinator actor.

Every way out of the loop tells the trials it holds: running ones are cancelled and told FAIL
(interrupted; after a SIGTERM, stopped: the next sweep resumes them), asked ones that never started are told
FAIL (not started), so no trial is left RUNNING in a study another sweep may own next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any

import ray

from hpo.cluster import ranks
from hpo.cluster.worker import TrialRun, Workload, trial_task
from hpo.config import SweepConfig
from hpo.coordinator.messages import Asked, FailureKind, Outcome, Reaped, Told
from hpo.coordinator.promotion import PromotionRule
from hpo.coordinator.settings import checkpoint_root
from hpo.errors import LeaseLostError, SweepError
from hpo.progress import Observer
from hpo.sweep import lease, outcomes
from hpo.sweep.ledger import Ledger, StopReason
from hpo.sweep.prepare import DRIVER_LOST
from hpo.sweep.stop import Stopper
from storage import StorageError

if TYPE_CHECKING:
    from hpo.sweep.run import Placement

TICK_SECONDS = 1.0
ASK_AHEAD = 2  # at most this many trials asked ahead of a free slot
NOT_STARTED = "not started: the sweep stopped"
STOPPED = "stopped: the sweep was terminated (SIGTERM); the next sweep resumes it from its last checkpoint"
WIND_DOWN_TIMEOUT = 30.0  # seconds a best-effort tell may take on the way out of a failed loop


class SweepLoop:
    def __init__(
        self,
        cfg: SweepConfig,
        coordinator: Any,
        *,
        placement: Placement,
        workload: Workload,
        observer: Observer,
        stopper: Stopper,
        ledger: Ledger,
    ) -> None:
        parallel = placement.parallel
        self.cfg, self.c, self.parallel, self.workload = cfg, coordinator, parallel, workload
        self.obs, self.stopper, self.ledger = observer, stopper, ledger
        # a data-parallel trial's task is its rank 0, in bundle 0 of a placement group reserved per trial
        self.task = trial_task(placement.rank_cpus, placement.rank_gpus)
        self.threads = max(1, int(placement.rank_cpus))
        self.shape = placement.rank_shape()
        self.groups: dict[ray.ObjectRef, Any] = {}  # the placement group of each running data-parallel trial
        self.root = checkpoint_root(cfg)  # the trials' folders, and their TensorBoard runs beside them
        # Beyond the free slots, this many trials are asked ahead, so that freed slots start them at once (with
        # one slot there is nothing to overlap: the ask would only queue behind the trial's reports).
        self.ahead = min(parallel, ASK_AHEAD) if parallel > 1 else 0
        # asha: a freed slot goes to a promoted paused trial first, so no trial is asked ahead of it
        self.asha = isinstance(cfg.pruner.rule(), PromotionRule)
        if self.asha:
            self.ahead = 0
        self.asking: list[ray.ObjectRef] = []  # asks sent, answers not read
        self.ready: list[Asked] = []  # asked (or retries), waiting for a slot
        self.running: dict[ray.ObjectRef, Asked] = {}
        self.telling: dict[ray.ObjectRef, FailureKind | None] = {}  # tells sent, summaries not read
        self.deadline = time.monotonic() + cfg.study.timeout if cfg.study.timeout else math.inf
        self._last_tick = self._last_beat = time.monotonic()
        self._live: ray.ObjectRef | None = None  # the coordinator's answers to the progress view and heartbeat
        self._beat: ray.ObjectRef | None = None
        self._stop_poll: ray.ObjectRef | None = None  # ``hpo stop`` from another shell, asked at the heartbeat

    # ----------------------------------------------------------------------------------------------
    def run(self, orphans: list[int]) -> None:
        """Reap what a lost driver left, then step until the sweep is done; the ledger says why it stopped."""
        ended = False
        try:
            self._reap(orphans)
            while self.step():
                pass
            self._wind_down()
            if self.asha and self.ledger.stop is None:  # the sweep ended normally: nothing left to promote them
                self._give_up_paused(everything=True)
            ended = True
        except StorageError as e:
            raise SweepError(
                f"lost the storage for more than storage_options.retry_timeout="
                f"{self.cfg.storage_options.retry_timeout:g}s: {e}; finished trials are saved, "
                "running ones will be marked FAIL by the next sweep"
            ) from e
        finally:
            if not ended:
                self._abandon()

    def step(self) -> bool:
        """One turn of the loop; False once nothing runs and nothing more will start."""
        stopper = self.stopper
        stopper.announce(self.obs, self.cfg.drain_timeout)
        past_deadline = time.monotonic() >= self.deadline
        reason = self.ledger.check(
            past_deadline=past_deadline, draining=stopper.draining, terminating=stopper.terminating
        )
        if reason is not None:
            self._announce(reason)
        if stopper.cancelling or stopper.drained(self.cfg.drain_timeout):
            self._cancel_running()
            return False
        self._fill_slots()
        self._read_tells(wait=not self.running)
        self._background(wait=not self.running)
        if not self.running:
            return self.ledger.more_needed()  # a tell just read came back FAIL: the target needs another trial
        done, _ = ray.wait(list(self.running), num_returns=1, timeout=0.5)
        ended = []
        for ref in done:
            asked = self.running.pop(ref)
            ranks.release(self.groups.pop(ref, None))  # no rank outlives its trial
            ended.append((asked, self._outcome(ref, asked)))
            self.ledger.ended()
        if all(o.state != "FAIL" for _, o in ended):  # a failure may spend the budget: tell it first
            self._start_waiting()  # a freed slot starts a trial asked ahead before the finished one is told
        for asked, outcome in ended:
            self._tell(asked, outcome)
        if self.asha and ended and self.ledger.paused:
            self._give_up_paused()
        return True

    # ----------------------------------------------------------------------------------------------
    def _announce(self, reason: StopReason) -> None:
        led = self.ledger
        if reason is StopReason.FAILURE_BUDGET:
            self.obs.message(
                f"stopping: {led.failed_now} trials failed in this sweep (max_failures={self.cfg.max_failures}); "
                "waiting for running trials"
            )
        elif reason is StopReason.ENVIRONMENT:
            self.obs.message(
                f"stopping: {led.environment_failure} - not the hyperparameters' fault, so every trial would fail "
                "the same way; fix it and run the sweep again (waiting for running trials)"
            )
        elif reason is StopReason.TIMEOUT:
            self.obs.message(
                f"study.timeout of {self.cfg.study.timeout:g}s reached: no new trials; waiting for running ones"
            )
        elif reason is StopReason.GPU_MEMORY:
            tried = ", ".join(sorted(set(led.gpu_memory_streak)))
            self.obs.message(
                f"stopping: the last {len(led.gpu_memory_streak)} trials ran out of GPU memory ({tried}) and none "
                "finished in between; search smaller batch sizes (search_space.batch_size) or a smaller model, or "
                "give each trial more GPU memory (resources.gpus_per_trial); waiting for running trials"
            )

    def _fill_slots(self) -> None:
        if self.asha:
            self._resume_paused()
        n = self.ledger.asks_wanted(self.parallel, self.ahead)
        self.asking.extend(self.c.ask.remote() for _ in range(n))
        self.ledger.asked(n)
        self._start_waiting()

    def _resume_paused(self) -> None:
        """asha: each free slot first resumes a promoted paused trial, if any (launched at once)."""
        led = self.ledger
        while led.launching and led.paused and len(self.running) + len(self.ready) + len(self.asking) < self.parallel:
            asked: Asked | None = call(self.c.resume.remote())
            if asked is None:
                return
            led.resumed()
            self.obs.message(f"resuming trial {asked.number} after epoch {asked.paused_at} (promoted)")
            self._launch(asked)

    def _give_up_paused(self, *, everything: bool = False) -> None:
        """asha: tell PRUNED the paused trials that can no longer be promoted (every one, at the end of a sweep),
        and the least promising while paused checkpoints exceed ``pruner.max_paused_gb``. While the sweep no
        longer launches, only the disk budget applies: the next sweep may still promote them."""
        led = self.ledger
        new_trials = max(0, led.target - led.committed()) if led.launching else math.inf
        for told in call(self.c.give_up_paused.remote(new_trials, everything)):
            led.gave_up(told)
            best = led.best.as_dict() if led.best else None
            self.obs.trial_finished(told.as_dict(), led.counts, best)

    def _start_waiting(self) -> None:
        """A retry or a trial asked ahead takes each free slot (a retry replaces the trial it retries, so it
        does not count against the target)."""
        while self.ledger.launching and len(self.running) < self.parallel and (self.ready or self.asking):
            if not self.ready:
                self._answered(self.asking.pop(0))
            self._launch(self.ready.pop(0))

    def _answered(self, ref: ray.ObjectRef) -> None:
        self.ready.append(call(ref))
        self.ledger.answered()

    def _launch(self, asked: Asked) -> None:
        cfg = self.cfg
        run = TrialRun(
            trial_id=asked.trial_id,
            config=asked.train_config,
            checkpoint_dir=asked.checkpoint_dir,
            resume_from=asked.resume_from,
            num_threads=self.threads,
            tensorboard_dir=f"{self.root}/tensorboard/trial-{asked.number:05d}" if cfg.tensorboard else None,
            submitted_at=time.time(),
        )
        if self.shape is None:
            self.running[self.task.remote(run, self.c, self.workload)] = asked
        else:
            group = ranks.reserve(self.shape)  # the trial waits for all its ranks' resources at once
            run = dataclasses.replace(run, ranks=self.shape, placement_group=group)
            task = self.task.options(scheduling_strategy=ranks.in_bundle(group, 0))
            ref = task.remote(run, self.c, self.workload)
            self.running[ref], self.groups[ref] = asked, group
        self.ledger.launch()

    def _tell(self, asked: Asked, outcome: Outcome) -> None:
        if outcome.state == "PAUSED":  # asha: stored at once, so that the next slot may resume it
            self._record(call(self.c.pause.remote(asked.trial_id, outcome)), None)
            return
        if outcome.state != "FAIL":  # the summary is read later: nothing waits for it
            self.telling[self.c.tell.remote(asked.trial_id, outcome)] = None
            self.ledger.telling_started()
            return
        # a failure is told at once: it may spend the budget, stop the sweep, or queue a retry
        kind = outcome.kind or FailureKind.TRIAL
        if kind.retryable and asked.attempt <= self.cfg.retries and self.ledger.launching:
            told, retry = call(self.c.fail_and_retry.remote(asked.trial_id, outcome))
            self.ready.append(retry)
            self.ledger.retry_created()
        else:
            told = call(self.c.tell.remote(asked.trial_id, outcome))
        self._record(told, kind, config=asked.train_config)

    def _record(
        self, told: Told, kind: FailureKind | None, *, pending: bool = False, config: dict[str, Any] | None = None
    ) -> None:
        self.ledger.told(told, kind, pending=pending, config=config)
        best = self.ledger.best.as_dict() if self.ledger.best else None
        self.obs.trial_finished(told.as_dict(), self.ledger.counts, best)

    def _read_tells(self, wait: bool) -> None:
        if not self.telling:
            return
        refs = list(self.telling)
        done = refs if wait else ray.wait(refs, num_returns=len(refs), timeout=0)[0]
        for ref in done:
            self._record(call(ref), self.telling.pop(ref), pending=True)

    def _background(self, wait: bool) -> None:
        """The progress view and the lease's heartbeat: asked now, their answers read once they are there (the
        coordinator may be busy with tells and asks, and a trial may finish meanwhile)."""
        now = time.monotonic()
        if self._live is None and now - self._last_tick >= TICK_SECONDS:
            self._last_tick, self._live = now, self.c.live.remote()
        if self._beat is None and now - self._last_beat >= lease.HEARTBEAT:
            self._last_beat, self._beat = now, self.c.heartbeat.remote()
            if self._stop_poll is None and not self.stopper.draining:
                self._stop_poll = self.c.stop_request.remote()
        if self._live is not None and _ready(self._live, wait=wait):
            best = self.ledger.best.as_dict() if self.ledger.best else None
            self.obs.tick(call(self._live), self.ledger.counts, best)
            self._live = None
        if self._beat is not None and _ready(self._beat, wait=wait):
            if not call(self._beat):  # a coordinator that lost its lease raises LeaseLostError, saying why
                raise LeaseLostError(f"another hpo sweep took study {self.cfg.study_name!r} over; stopping this one")
            self._beat = None
        if self._stop_poll is not None and _ready(self._stop_poll, wait=wait):
            request = call(self._stop_poll)
            self._stop_poll = None
            if request is not None:
                self.stopper.remote_request(request)

    def _reap(self, orphans: list[int]) -> None:
        """Fail the trials a lost driver left RUNNING, and rerun them (up to the target) from their checkpoints,
        with the trials a terminated sweep stopped."""
        limit = max(0, self.ledger.target - self.ledger.finished())
        r: Reaped = call(self.c.reap.remote(orphans, DRIVER_LOST, self.cfg.retries, limit))
        self.ledger.reaped(len(r.failed), r.created, len(r.to_run) - r.created)
        self.ready.extend(r.to_run)
        lost = len(r.to_run) - len(r.resumed_stopped)
        if r.failed or lost:
            self.obs.message(
                f"marked {len(r.failed)} trial(s) left RUNNING by a lost driver as FAIL: {r.failed}"
                + (f"; running {lost} of them again from their last checkpoints" if lost else "")
            )
        if r.resumed_stopped:
            self.obs.message(
                f"resuming {len(r.resumed_stopped)} trial(s) a terminated sweep stopped, from their last "
                f"checkpoints: {r.resumed_stopped}"
            )

    def _cancel_running(self) -> None:
        """Ctrl-C twice: cancel the running trials and tell them FAIL (interrupted). After a SIGTERM (its drain
        timed out, or a second signal came): stop them and tell them FAIL (stopped), for the next sweep to
        resume from their checkpoints, spending neither the failure budget nor an attempt."""
        self.ledger.cancelled()
        terminating = self.stopper.terminating
        refs = list(self.running)
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        for ref, asked in list(self.running.items()):
            del self.running[ref]
            self.ledger.ended()
            if ref in done:  # it has just ended on its own: told how, not thrown away
                ranks.release(self.groups.pop(ref, None))
                self._tell(asked, self._outcome(ref, asked))
                continue
            ray.cancel(ref, force=True)
            ranks.release(self.groups.pop(ref, None))  # ends a data-parallel trial's other ranks too
            if terminating:
                self._tell(asked, Outcome.fail(FailureKind.STOPPED, STOPPED))
            else:
                self._tell(asked, Outcome.fail(FailureKind.INTERRUPTED, "interrupted"))

    def _wind_down(self) -> None:
        """Tell the trials asked ahead, and the retries, that the sweep stopped before they could start. After a
        SIGTERM, a retry that would have resumed a checkpoint is told FAIL (stopped): the next sweep resumes it."""
        while self.asking:
            self._answered(self.asking.pop(0))
        while self.ready:
            asked = self.ready.pop(0)
            self.ledger.not_started()
            kind = FailureKind.STOPPED if self.stopper.terminating and asked.resume_from else FailureKind.NOT_STARTED
            outcome = Outcome.fail(kind, STOPPED if kind is FailureKind.STOPPED else NOT_STARTED)
            self._record(call(self.c.tell.remote(asked.trial_id, outcome)), kind)
        self._read_tells(wait=True)

    def _abandon(self) -> None:
        """On the way out of a loop that raised: cancel what runs and tell every trial this sweep holds, as far
        as the coordinator can still be reached (each call bounded in time)."""
        for ref in self.running:
            ray.cancel(ref, force=True)
        for group in self.groups.values():
            ranks.release(group)
        self.groups.clear()
        stopped = Outcome.fail(FailureKind.INTERRUPTED, "interrupted: the sweep stopped on an error")
        unstarted = Outcome.fail(FailureKind.NOT_STARTED, NOT_STARTED)
        held = list(self.running.values())
        self.running.clear()
        refs: list[ray.ObjectRef] = []
        with contextlib.suppress(Exception):
            refs += [self.c.tell.remote(a.trial_id, stopped) for a in held]
            refs += [self.c.tell.remote(a.trial_id, unstarted) for a in self.ready]
        self.ready.clear()
        answered: list[ray.ObjectRef] = []
        if self.asking:  # one wait for every ask: a hung coordinator costs one timeout, not one per ask
            with contextlib.suppress(Exception):
                answered = ray.wait(self.asking, num_returns=len(self.asking), timeout=WIND_DOWN_TIMEOUT)[0]
        for ref in answered:
            with contextlib.suppress(Exception):
                asked = ray.get(ref, timeout=0)
                refs.append(self.c.tell.remote(asked.trial_id, unstarted))
        self.asking.clear()
        polls = [r for r in (self._live, self._beat, self._stop_poll) if r is not None]
        settle(refs + list(self.telling) + polls, WIND_DOWN_TIMEOUT)
        self.telling.clear()
        self._live = self._beat = self._stop_poll = None

    def _outcome(self, ref: ray.ObjectRef, asked: Asked) -> Outcome:
        """How the trial task ``ref`` ended (it has ended)."""
        try:
            return outcomes.from_result(ray.get(ref), self.cfg.objectives)
        except ray.exceptions.RayActorError as e:
            raise SweepError(f"the coordinator died: {outcomes.describe_error(e)}") from e
        except ray.exceptions.RayError as e:
            return outcomes.from_error(e, asked.train_config)


def _ready(ref: Any, *, wait: bool) -> bool:
    """Whether the answer ``ref`` is there (``wait``: once it is)."""
    return bool(ray.wait([ref], num_returns=1, timeout=None if wait else 0)[0])


def settle(refs: list[Any], timeout: float) -> None:
    """Wait up to ``timeout`` for ``refs`` and read each one that came back, errors ignored: an error left
    unread would be printed by Ray as an "Unhandled error" with its stack when the reference is dropped."""
    if not refs:
        return
    with contextlib.suppress(Exception):
        refs = ray.wait(refs, num_returns=len(refs), timeout=timeout)[0]
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=0)


def call(ref: Any) -> Any:
    """``ray.get`` on a coordinator call; a dead coordinator ends the sweep with one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise SweepError(f"the coordinator died: {outcomes.describe_error(e)}") from e
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if cause is not None:
            raise cause from None
        raise
