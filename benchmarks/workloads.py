"""Workloads the benchmarks run on Ray workers (importable there: the repo root is on PYTHONPATH).

Each follows ``hpo.cluster.worker.Workload``: ``workload(config, reporter, checkpoint_dir, *, num_threads)``
returns ``{"status": ..., "best_metrics": {...}, "epochs_run": n}``. The same functions give the
baselines their objective values, so hpo and its baseline see identical numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

Reporter = Callable[[int, Mapping[str, float]], str]

#: Steps each control-plane trial reports (P2) and the sleep of a dispatch-efficiency trial (P3).
REPORT_STEPS = 20
SLEEP_SECONDS = 0.5
TIMING_FILE = "bench_timing.json"


def warm_up(seconds: float) -> int:
    """Occupy a worker for ``seconds`` (so concurrent calls start distinct workers); returns its pid."""
    time.sleep(seconds)
    return os.getpid()


def curve(params: Mapping[str, Any], step: int) -> float:
    """A validation accuracy that rises with the step and depends on the params (something for the pruner
    to judge). Only ``lr`` and ``dropout`` matter; missing ones take a middling value."""
    lr = float(params.get("lr", 1e-3))
    dropout = float(params.get("dropout", 0.2))
    quality = max(0.05, 0.95 - 0.08 * (math.log10(lr) + 2.5) ** 2 - 0.4 * abs(dropout - 0.1))
    return quality * (1.0 - math.exp(-step / 4.0))


def reports_only(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """P2: no work at all, ``REPORT_STEPS`` reports of ``curve``. Like the baseline, it keeps going when
    told to prune, so both make exactly the same number of report + prune-decision round trips."""
    best = -math.inf
    for step in range(1, REPORT_STEPS + 1):
        value = curve(config, step)
        best = max(best, value)
        reporter(step, {"val_acc": value})
    return {"status": "completed", "best_metrics": {"val_acc": best}, "epochs_run": REPORT_STEPS}


def sleep_once(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """P3: sleep ``SLEEP_SECONDS``, report nothing, return a value (the baselines' objective does the same)."""
    time.sleep(SLEEP_SECONDS)
    return {"status": "completed", "best_metrics": {"val_acc": curve(config, 1)}, "epochs_run": 1}


def sleep_epochs(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """P4: ``config['epochs']`` epochs of 0.05 s, each reported; honours prune."""
    best = -math.inf
    epochs = int(config["epochs"])
    for epoch in range(1, epochs + 1):
        time.sleep(0.05)
        value = curve(config, epoch)
        best = max(best, value)
        if reporter(epoch, {"val_acc": value}) == "prune":
            return {"status": "pruned", "best_metrics": {"val_acc": best}, "epochs_run": epoch}
    return {"status": "completed", "best_metrics": {"val_acc": best}, "epochs_run": epochs}


@contextlib.contextmanager
def first_step_clock() -> Iterator[dict[str, float]]:
    """While the block runs, the wall-clock time (``time.time()``) of the first optimizer step taken in this
    process goes into the yielded dict as ``first_step_at``. A global torch hook, removed afterwards: the
    clock stops after the step's update, the moment training has actually begun (not when a batch is fetched)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    clock: dict[str, float] = {}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        clock.setdefault("first_step_at", time.time())

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield clock
    finally:
        handle.remove()


def timed_fit(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """P7: hpo's real training workload (``train_workload``: ``trials.fit``), plus a file in the trial's folder
    saying in which process it ran, when the workload was entered, when its first batch was fetched, when its
    first optimizer step was taken and when it returned (the sweep keeps only a summary). Ray Tune's trainable
    (``tune_fit``) runs this same function."""
    from hpo.cluster.worker import train_workload

    entered = time.time()
    with first_step_clock() as clock:
        summary = train_workload(config, reporter, checkpoint_dir, num_threads=num_threads)
    timing = {
        "pid": os.getpid(),
        "entered_at": entered,
        "first_batch_at": summary.get("timings", {}).get("first_batch_at"),
        "first_step_at": clock.get("first_step_at"),
        "exited_at": time.time(),
    }
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    Path(checkpoint_dir, TIMING_FILE).write_text(json.dumps(timing))
    return summary


def tune_fit(config: dict[str, Any]) -> None:
    """P7's Ray Tune trainable: one trial's full training config (``config["train"]``) through ``timed_fit``,
    each epoch reported to Tune with ``tune.report``; it never asks to stop (ASHA off, like hpo's pruner)."""
    from ray import tune

    def reporter(epoch: int, metrics: Mapping[str, float]) -> str:
        tune.report({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        return "continue"

    folder = Path(config["checkpoint_root"], f"trial-{uuid.uuid4().hex[:10]}")
    timed_fit(dict(config["train"]), reporter, str(folder), num_threads=int(config["num_threads"]))


def tune_sleep(config: dict[str, Any]) -> dict[str, float]:
    """P3's Ray Tune trainable: the same sleep and value as ``sleep_once``."""
    time.sleep(SLEEP_SECONDS)
    return {"val_acc": curve(config, 1)}


def read_timings(root: str | Path) -> list[dict[str, Any]]:
    """Every ``timed_fit`` record under ``root`` (a sweep's checkpoint folders, or Tune's)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).rglob(TIMING_FILE))]
