"""Replay one search on recorded curves: parallel workers, simulated wall clock, compute in GPU-seconds.

A searcher (``Searcher``) hands out jobs (a new trial, or a paused one resumed) and answers every epoch's
report with continue, prune or pause. A job trains epoch after epoch of its run's recorded curve; each epoch
costs its recorded seconds, a job's start (or resume) the task's set-up seconds. Early stopping (the sweep's
defaults) ends a trial as ``fit`` would. Each finished trial that beats the incumbent's val is logged with the
compute spent so far, so the search's anytime test regret can be read at any budget.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from benchmarks.curves.data import Run, TaskCurves

Answer = Literal["continue", "prune", "pause"]


@dataclass
class Job:
    key: Any  # the searcher's handle of the trial
    params: dict[str, Any]
    run: Run | None = None  # set by the simulator (nearest recorded config, a seed drawn)
    stop: int = 0  # set with ``run``: the epoch after which early stopping ends it
    done: int = 0  # epochs trained so far
    best_val: float = float("-inf")


class Searcher(Protocol):
    def next_job(self) -> Job | None: ...
    def report(self, job: Job, epoch: int, val: float) -> Answer: ...
    def finished(self, job: Job, state: Literal["COMPLETE", "PRUNED"], value: float | None) -> None: ...


@dataclass
class Trace:
    """What a replayed search did: every improvement of the incumbent (compute, test accuracy), totals."""

    improvements: list[tuple[float, float]] = field(default_factory=list)
    compute: float = 0.0
    wall: float = 0.0
    trials: int = 0
    epochs: int = 0
    best_val: float = float("-inf")

    def test_at(self, compute: float, before_any: float) -> float:
        """The incumbent's test accuracy once ``compute`` GPU-seconds were spent."""
        out = before_any
        for spent, test in self.improvements:
            if spent > compute + 1e-9:
                break
            out = test
        return out


def replay(
    curves: TaskCurves,
    searcher: Searcher,
    *,
    seed: int,
    workers: int = 4,
    max_compute: float | None = None,
) -> Trace:
    """Run ``searcher`` on ``curves`` until it hands out no job and nothing runs, or ``max_compute`` is spent."""
    rng = random.Random(seed)
    trace = Trace()
    events: list[tuple[float, int, int]] = []  # (time, tie-break, worker)
    jobs: dict[int, Job] = {}
    tick = 0
    idle = list(range(workers))
    stopped = False

    def start(worker: int, now: float) -> bool:
        nonlocal tick
        job = searcher.next_job()
        if job is None:
            return False
        if job.run is None:
            config = curves.nearest(job.params)
            job.run = rng.choice(curves.runs[config])
            job.stop = job.run.stop_epoch(curves.patience, curves.min_delta)
            trace.trials += 1
        jobs[worker] = job
        cost = curves.setup_s + job.run.seconds[job.done]
        trace.compute += curves.setup_s
        tick += 1
        heapq.heappush(events, (now + cost, tick, worker))
        return True

    def fill(now: float) -> None:
        while idle and not stopped:
            if not start(idle[0], now):
                return
            idle.pop(0)

    fill(0.0)
    while events:
        now, _, worker = heapq.heappop(events)
        job = jobs[worker]
        assert job.run is not None
        run = job.run
        job.done += 1
        trace.compute += run.seconds[job.done - 1]
        trace.epochs += 1
        trace.wall = now
        val = run.val[job.done - 1]
        job.best_val = max(job.best_val, val)
        answer = searcher.report(job, job.done, val)
        if answer == "prune":  # as fit: the answer first, then early stopping
            searcher.finished(job, "PRUNED", None)
        elif job.done >= job.stop or job.done >= curves.epochs:
            _complete(curves, searcher, job, trace)  # a finished run is complete, even if told to pause
        elif answer == "pause":
            pass  # the searcher keeps it; next_job may hand it out again
        else:
            tick += 1
            heapq.heappush(events, (now + run.seconds[job.done], tick, worker))
            continue
        del jobs[worker]
        idle.append(worker)
        if max_compute is not None and trace.compute >= max_compute:
            stopped = True
        fill(now)
    return trace


def _complete(curves: TaskCurves, searcher: Searcher, job: Job, trace: Trace) -> None:
    assert job.run is not None
    best = job.run.best_epoch(job.done, curves.min_delta)
    val, test = job.run.val[best - 1], job.run.test[best - 1]
    searcher.finished(job, "COMPLETE", val)
    if val > trace.best_val:
        trace.best_val = val
        trace.improvements.append((trace.compute, test))
