"""The sweep loop's bookkeeping, as a pure object: counts by state, the best trial, the failure budget, the
target, what is in flight, and why the sweep stops. No Ray, no Optuna: tested by tables
(``tests/test_ledger.py``).

The counts mirror the study's: a trial is RUNNING from the moment it is asked (it is RUNNING in the
database then) until it is told, whether or not a worker ever ran it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo.coordinator.messages import FailureKind, Told
from hpo.ranking import Best, better, ranks


class StopReason(str, enum.Enum):
    """Why a sweep stopped (or will stop once its running trials finish), and the exit code it maps to."""

    TARGET_REACHED = "target reached"
    NOTHING_TO_DO = "nothing to do"
    TIMEOUT = "timeout"  # study.timeout passed before the target was reached
    FAILURE_BUDGET = "failure budget"
    ENVIRONMENT = "environment"  # a failure no hyperparameters could fix: data, weights, the workload
    GPU_MEMORY = "out of GPU memory"  # GPU_MEMORY_STREAK trials in a row ran out of GPU memory
    INTERRUPTED = "interrupted"  # Ctrl-C once: running trials finished
    CANCELLED = "cancelled"  # Ctrl-C twice: running trials cancelled
    TERMINATED = "terminated"  # SIGTERM: running trials finished, or stopped after drain_timeout to be resumed

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


#: The exit code of each way a sweep ends (``hpo sweep --help`` says them): 0 the target reached (or nothing
#: to do), 1 the sweep could not go on, 3 ``study.timeout`` ended it short of its target, 130 Ctrl-C, 143 SIGTERM
#: (128 + the signal, as a shell reports a process the signal ended). 2 is a usage or config error (hpo.errors).
EXIT_TIMEOUT = 3
_EXIT_CODES = {
    StopReason.TARGET_REACHED: 0,
    StopReason.NOTHING_TO_DO: 0,
    StopReason.TIMEOUT: EXIT_TIMEOUT,
    StopReason.FAILURE_BUDGET: 1,
    StopReason.ENVIRONMENT: 1,
    StopReason.GPU_MEMORY: 1,
    StopReason.INTERRUPTED: 130,
    StopReason.CANCELLED: 130,
    StopReason.TERMINATED: 143,
}

#: This many trials in a row out of GPU memory, none finishing in between, stop the sweep: the search space
#: (batch sizes, models) does not fit the GPU a trial gets, and the sampler would go on asking forever.
GPU_MEMORY_STREAK = 5


@dataclass
class Ledger:
    target: int  # finished trials (COMPLETE + PRUNED) the study should reach
    max_failures: int
    direction: str
    counts: dict[str, int]
    best: Best | None = None
    stop: StopReason | None = None  # None while the sweep launches new trials
    failed_now: int = 0  # failures in this sweep that spend the budget
    launched: int = 0
    asking: int = 0  # asks sent to the coordinator, not answered yet
    waiting: int = 0  # asked (or retries created) and not launched yet
    running: int = 0  # launched, not finished
    telling: int = 0  # finished, told, the answer not read yet
    paused: int = 0  # paused by asha (WAITING in the study): they count towards the target, as trials created
    environment_failure: str | None = field(default=None)
    gpu_memory_streak: list[str] = field(default_factory=list)  # what ran out of GPU memory since the last finish

    def __post_init__(self) -> None:
        self.counts = {s: int(self.counts.get(s, 0)) for s in ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")}

    # ---- what is where
    def finished(self) -> int:
        return self.counts["COMPLETE"] + self.counts["PRUNED"]

    def committed(self) -> int:
        """Trials finished or on their way: told (or being told), running, waiting, being asked, paused."""
        return self.finished() + self.telling + self.running + self.waiting + self.asking + self.paused

    @property
    def launching(self) -> bool:
        return self.stop is None

    def asks_wanted(self, parallel: int, ahead: int) -> int:
        """How many trials to ask now: enough for the free slots and ``ahead`` more, never past the target."""
        if not self.launching:
            return 0
        free = parallel + ahead - self.running - self.waiting - self.asking
        return max(0, min(free, self.target - self.committed()))

    def more_needed(self) -> bool:
        """Nothing runs, but the target is not reached by what is finished or on its way."""
        return self.launching and self.committed() < self.target

    # ---- events
    def asked(self, n: int = 1) -> None:
        self.asking += n

    def answered(self) -> None:
        """An ask came back: the trial exists (RUNNING in the study) and waits for a slot."""
        self.asking -= 1
        self.waiting += 1
        self.counts["RUNNING"] += 1

    def retry_created(self) -> None:
        self.waiting += 1
        self.counts["RUNNING"] += 1

    def launch(self) -> None:
        self.waiting -= 1
        self.running += 1
        self.launched += 1

    def ended(self) -> None:
        """A running trial's task ended; its tell follows."""
        self.running -= 1

    def telling_started(self) -> None:
        self.telling += 1

    def told(
        self, told: Told, kind: FailureKind | None, *, pending: bool = False, config: Mapping[str, Any] | None = None
    ) -> None:
        """A trial was told and this is the coordinator's summary. ``pending``: its tell was counted in
        ``telling``; ``config``: the trial's training config (named when trials run out of GPU memory).
        Updates the counts, the best trial, the failure budget and the out-of-GPU-memory streak."""
        if pending:
            self.telling -= 1
        self.counts["RUNNING"] = max(0, self.counts["RUNNING"] - 1)
        self.counts[told.state] = self.counts.get(told.state, 0) + 1
        if told.state == "WAITING":
            self.paused += 1  # asha paused it
        if told.state == "COMPLETE" and self._improves(told.value):
            self.best = Best(told.number, float(told.value), told.params)  # type: ignore[arg-type]
        if told.state == "FAIL" and kind is not None and kind.spends_budget:
            self.failed_now += 1
        if told.state == "FAIL" and kind is not None and kind.stops_sweep and self.environment_failure is None:
            self.environment_failure = told.reason or "a failure that is not the hyperparameters' fault"
        if told.state in ("COMPLETE", "PRUNED"):
            self.gpu_memory_streak.clear()
        elif told.state == "FAIL" and kind is FailureKind.GPU_MEMORY:
            c = config or {}
            self.gpu_memory_streak.append(f"batch_size={c.get('batch_size')} model={c.get('model')}")

    def _improves(self, value: float | None) -> bool:
        if not ranks(value):
            return False
        return self.best is None or better(value, self.best.value, self.direction)  # type: ignore[arg-type]

    def resumed(self) -> None:
        """A paused trial was promoted: RUNNING again, waiting for its launch."""
        self.paused -= 1
        self.counts["WAITING"] = max(0, self.counts["WAITING"] - 1)
        self.counts["RUNNING"] += 1
        self.waiting += 1

    def gave_up(self, told: Told) -> None:
        """A paused trial was given up: PRUNED, from WAITING."""
        self.paused -= 1
        self.counts["WAITING"] = max(0, self.counts["WAITING"] - 1)
        self.counts[told.state] = self.counts.get(told.state, 0) + 1

    def reaped(self, n_reaped: int, n_retries: int, n_resumed: int = 0) -> None:
        """Trials a lost driver left RUNNING were told FAIL; ``n_retries`` new trials run them (or trials a
        terminated sweep stopped) again; ``n_resumed`` half-done retries, RUNNING already, run as they are."""
        self.counts["RUNNING"] += n_retries - n_reaped
        self.counts["FAIL"] += n_reaped
        self.waiting += n_retries + n_resumed

    def not_started(self, n: int = 1) -> None:
        """``n`` waiting trials are about to be told FAIL (not started)."""
        self.waiting -= n

    # ---- stopping
    def check(self, *, past_deadline: bool, draining: bool, terminating: bool = False) -> StopReason | None:
        """Decide whether to stop launching; returns the reason when it has just been decided. A SIGTERM
        (``terminating``) overrides a stop that is only waiting for running trials (Ctrl-C once, the timeout)."""
        if terminating and self.stop in (StopReason.INTERRUPTED, StopReason.TIMEOUT):
            self.stop = None
        if self.stop is not None:
            return None
        if self.environment_failure is not None:
            self.stop = StopReason.ENVIRONMENT
        elif self.failed_now > self.max_failures:
            self.stop = StopReason.FAILURE_BUDGET
        elif len(self.gpu_memory_streak) >= GPU_MEMORY_STREAK:
            self.stop = StopReason.GPU_MEMORY
        elif terminating:
            self.stop = StopReason.TERMINATED
        elif draining:
            self.stop = StopReason.INTERRUPTED
        elif past_deadline:
            self.stop = StopReason.TIMEOUT
        return self.stop

    def cancelled(self) -> None:
        """Ctrl-C twice: a sweep already stopping for its own reason keeps that reason."""
        if self.stop in (None, StopReason.INTERRUPTED, StopReason.TIMEOUT):
            self.stop = StopReason.CANCELLED

    def final_reason(self) -> StopReason:
        if self.stop is StopReason.TIMEOUT and self.finished() >= self.target:
            return StopReason.TARGET_REACHED  # the trials running at the deadline reached it
        return self.stop or StopReason.TARGET_REACHED
