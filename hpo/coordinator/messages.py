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
    INFRA = "infra"  # its worker or node died, or its driver was lost: the same params may well succeed
    ENVIRONMENT = "environment"  # not the hyperparameters' fault (unreadable data, missing weights, a bug in
    # the workload): every trial would fail the same way
    GPU_MEMORY = "gpu_memory"  # out of GPU memory: these params do not fit this GPU (not retried, no budget)
    INTERRUPTED = "interrupted"  # cancelled by the user
    NOT_STARTED = "not_started"  # asked (or queued for a retry) but the sweep stopped before it ran

    @property
    def retryable(self) -> bool:
        """Worth running the same params again, from the trial's last checkpoint."""
        return self is FailureKind.INFRA

    @property
    def spends_budget(self) -> bool:
        """Counts against ``max_failures``."""
        return self in (FailureKind.TRIAL, FailureKind.INFRA)

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


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the driver saw it."""

    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str | None = None  # FAIL only
    attrs: dict[str, Any] = field(default_factory=dict)
    kind: FailureKind | None = None  # FAIL only
    values: tuple[float, ...] | None = None  # COMPLETE in a multi-objective study: every objective, primary first

    @staticmethod
    def fail(kind: FailureKind, reason: str, attrs: dict[str, Any] | None = None) -> Outcome:
        return Outcome("FAIL", None, reason, dict(attrs or {}), kind)


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
