"""What the sweep loop and the coordinator hand each other: a trial asked, and how a trial ended.

Plain data (no Optuna), so the loop's bookkeeping can be tested without a study. A failure carries its
``FailureKind``: whether it is worth running again, whether it spends the sweep's failure budget, and
whether it stops the sweep at once; those are properties of the kind, never parsed from the message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from hpo.ranking import TrialSummary


class FailureKind(enum.Enum):
    """Why a trial failed, as data the loop acts on."""

    TRIAL = "trial"  # the trial's own run failed (an exception from training, a non-finite metric)
    INFRA = "infra"  # its worker process died (a crash, a kill): the same params may well succeed, but a
    # crash can be the params' doing (a segfault, host memory), so it spends the budget
    LOST = "lost"  # its node or its driver was lost: nothing the trial did; retried, spends no budget
    ENVIRONMENT = "environment"  # not the hyperparameters' fault (unreadable data, missing weights, a bug in
    # the workload): every trial would fail the same way
    GPU_MEMORY = "gpu_memory"  # out of GPU memory: these params do not fit this GPU (not retried, no budget)
    INTERRUPTED = "interrupted"  # cancelled by the user
    NOT_STARTED = "not_started"  # asked (or queued for a retry) but the sweep stopped before it ran
    STOPPED = "stopped"  # the sweep was terminated (SIGTERM) past its drain_timeout while the trial ran: the
    # next sweep on the study resumes it from its last checkpoint, spending neither an attempt nor the budget

    @property
    def retryable(self) -> bool:
        """Worth running the same params again, from the trial's last checkpoint, in this sweep."""
        return self in (FailureKind.INFRA, FailureKind.LOST)

    @property
    def spends_budget(self) -> bool:
        """Counts against ``max_failures``."""
        return self in (FailureKind.TRIAL, FailureKind.INFRA)

    @property
    def spends_attempt(self) -> bool:
        """Its retry is one attempt further on (``retries`` bounds them); a rerun of what never started, or of
        what a terminated sweep stopped, starts no new attempt."""
        return self in (FailureKind.INFRA, FailureKind.LOST)

    @property
    def stops_sweep(self) -> bool:
        """Ends the sweep at the first one (no new trials; running ones finish)."""
        return self is FailureKind.ENVIRONMENT


@dataclass(frozen=True)
class Asked:
    """A trial the coordinator created, with everything a worker needs to run it."""

    trial_id: int
    number: int
    params: dict[str, Any]
    train_config: dict[str, Any]
    checkpoint_dir: str
    resume_from: str | None = None  # checkpoint folder of the failed trial this one retries
    attempt: int = 1
    paused_at: int | None = None  # a paused trial resumed (asha): the epoch it resumes after


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the driver saw it."""

    state: str  # COMPLETE | PRUNED | FAIL | PAUSED (asha: the worker saved it to resume later)
    value: float | None = None
    reason: str | None = None  # FAIL only
    attrs: dict[str, Any] = field(default_factory=dict)
    kind: FailureKind | None = None  # FAIL only
    values: tuple[float, ...] | None = None  # COMPLETE in a multi-objective study: every objective, primary first

    @staticmethod
    def fail(kind: FailureKind, reason: str, attrs: dict[str, Any] | None = None) -> Outcome:
        return Outcome("FAIL", None, reason, dict(attrs or {}), kind)


@dataclass(frozen=True)
class Reaped:
    """What a new sweep did with the trials a lost driver left RUNNING, and with those a terminated sweep
    stopped: ``failed``, the numbers of the trials told FAIL now; ``to_run``, the trials to launch, of which
    ``created`` are new trials (retries) and the rest half-done retries resumed as they are."""

    failed: list[int]
    to_run: list[Asked]
    created: int
    resumed_stopped: list[int] = field(default_factory=list)  # numbers of stopped trials resumed by a retry


@dataclass(frozen=True)
class Told(TrialSummary):
    """The coordinator's summary of a trial it has just told (for the loop's counts and progress)."""

    steps: int
    reason: str | None = None
    retried_by: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value,
            "params": self.params,
            "steps": self.steps,
            "reason": self.reason,
            "retried_by": self.retried_by,
        }
