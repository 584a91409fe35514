"""How a trial task ended, from what Ray handed back: the trial's Optuna state, value, reason, and for a
failure its ``FailureKind`` (decided by the exception's type, never by its message). Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ray.exceptions

from hpo import study as studies
from hpo.cluster.worker import GpuOutOfMemory
from hpo.coordinator.messages import FailureKind, Outcome
from trials.errors import DataError, ModelError

#: Raised inside a trial, these are not the hyperparameters' fault: every trial would fail the same way
#: (unreadable data, weights that cannot be loaded, a workload that does not import or names what does
#: not exist). The sweep stops at the first one.
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (DataError, ModelError, ImportError, NameError, SyntaxError)


def from_result(result: Mapping[str, Any], objectives: str | Sequence[str]) -> Outcome:
    """A trial task returned: COMPLETE with the best epoch's metric (every objective's, primary first, in a
    multi-objective study), PRUNED, or PAUSED (asha: to resume from its checkpoint)."""
    names = [objectives] if isinstance(objectives, str) else list(objectives)
    attrs: dict[str, Any] = {
        studies.ATTR_STOP_REASON: result.get("status"),
        studies.ATTR_EPOCHS_RUN: result.get("epochs_run"),
        studies.ATTR_BEST_EPOCH: result.get("best_epoch"),
        studies.ATTR_METRICS: _finite_or_str(result.get("best_metrics") or {}),
        studies.ATTR_DURATION: result.get("duration_s"),
        studies.ATTR_QUEUED: result.get("queued_s"),
        studies.ATTR_NODE: result.get("node"),
    }
    if result.get("resumed_from_epoch"):
        attrs[studies.ATTR_RESUMED_FROM] = result["resumed_from_epoch"]
    attrs = {k: v for k, v in attrs.items() if v is not None}
    if result.get("status") == "pruned":
        return Outcome("PRUNED", None, None, attrs)
    if result.get("status") == "paused":
        return Outcome("PAUSED", None, None, attrs)
    metrics = result.get("best_metrics") or {}
    for metric in names:
        if metric not in metrics:
            return Outcome.fail(FailureKind.TRIAL, f"the trial returned no {metric!r} metric", attrs)
        value = metrics[metric]
        if value is None or not math.isfinite(float(value)):
            return Outcome.fail(FailureKind.TRIAL, f"final {metric} is {value}, not a finite number", attrs)
    values = tuple(float(metrics[m]) for m in names)
    return Outcome("COMPLETE", values[0], None, attrs, values=values if len(values) > 1 else None)


def from_error(exc: BaseException, config: Mapping[str, Any] | None = None) -> Outcome:
    """A trial task raised, or its worker or node died. ``config``: the trial's training config (named in the
    reason of a failure it caused, such as running out of GPU memory)."""
    kind = kind_of(exc)
    if kind is FailureKind.GPU_MEMORY and config is not None:
        return Outcome.fail(
            kind, f"out of GPU memory at batch_size={config.get('batch_size')}, model={config.get('model')}"
        )
    return Outcome.fail(kind, describe_error(exc))


def kind_of(exc: BaseException) -> FailureKind:
    """What kind of failure ``exc`` (as ``ray.get`` raised it) is."""
    e = ray.exceptions
    if isinstance(exc, e.TaskCancelledError):
        return FailureKind.INTERRUPTED
    if isinstance(exc, e.NodeDiedError | e.LocalRayletDiedError):
        return FailureKind.LOST  # the node went: nothing this trial did
    if isinstance(exc, e.WorkerCrashedError):
        return FailureKind.INFRA
    cause = getattr(exc, "cause", None) if isinstance(exc, e.RayTaskError) else exc
    if isinstance(cause, GpuOutOfMemory):
        return FailureKind.GPU_MEMORY
    if isinstance(cause, ENVIRONMENT_ERRORS):
        return FailureKind.ENVIRONMENT
    return FailureKind.TRIAL


def describe_error(exc: BaseException) -> str:
    """One line saying why a trial failed."""
    e = ray.exceptions
    if isinstance(exc, e.TaskCancelledError):
        return "interrupted"
    if isinstance(exc, e.OutOfMemoryError):
        return "out of memory: Ray's memory monitor killed the worker"
    if isinstance(exc, e.NodeDiedError):
        return f"node died: {_first_line(exc)}"
    if isinstance(exc, e.WorkerCrashedError | e.LocalRayletDiedError):
        return f"worker died: {_first_line(exc)}"
    if isinstance(exc, e.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None and not isinstance(cause, e.RayTaskError):
            if isinstance(cause, e.RayActorError):
                return f"coordinator unreachable: {_first_line(cause)}"
            return f"{type(cause).__name__}: {_first_line(cause)}"
        return f"{exc.function_name} raised: {_first_line(exc)}"
    if isinstance(exc, e.RayError):
        return f"ray error ({type(exc).__name__}): {_first_line(exc)}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    """The first sentence of the first line: Ray's messages go on for a paragraph of troubleshooting."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    sentence = text.split(". ", 1)[0]
    return sentence[:300]


def _finite_or_str(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # user attrs are JSON: NaN and infinity would not survive the round trip
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in metrics.items()}
