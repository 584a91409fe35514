"""P7: worker reuse: time from dispatch to the first training batch for a worker's 2nd and later trials.

``run_sweep`` runs real ``trials.fit`` trials (resnet18 from scratch, tiny digits, one epoch) through
``benchmarks.workloads.timed_fit``, which records when the workload was entered and when its first batch
trained (``fit``'s ``timings["first_batch_at"]``). Dispatch is when the driver submitted the trial's task:
the trial's ``queued_s`` attr is the time from there to the task starting on a worker. Trials are grouped
by the worker process that ran them; a worker's first trial (Python imports torch and torchvision) is
shown apart.
"""

from __future__ import annotations

from typing import Any

from benchmarks import workloads
from benchmarks.common import Result, Row, median, quiet_optuna, secs
from benchmarks.sweeps import run_hpo, sweep_config

GOAL_S = 0.3


def run(admin_url: str, quick: bool = False) -> Result:
    import optuna

    from benchmarks.common import fresh_database

    quiet_optuna()
    n_trials = 6 if quick else 12
    result = Result("P7", "Worker reuse: dispatch to first training batch")
    train = {
        "model": "resnet18",
        "weights": None,
        "dataset": {"type": "digits", "max_train_samples": 64, "max_val_samples": 32},
    }
    rows: list[dict[str, Any]] = []
    with fresh_database(admin_url, "p7") as url:
        cfg = sweep_config(
            url,
            "p7",
            n_trials=n_trials,
            parallel=2,
            cpus_per_trial=1,
            epochs=1,
            pruner="none",
            train=train,
            extra={"search_space": {"batch_size": 32}},
        )
        run_hpo(cfg, workloads.timed_fit)
        for t in optuna.load_study(study_name="p7", storage=url).get_trials():
            timing = workloads.read_timing(t.user_attrs["checkpoint_dir"])
            queued = t.user_attrs.get("queued_s")
            if timing is None or timing.get("first_batch_at") is None or queued is None:
                continue
            rows.append(
                {
                    "number": t.number,
                    "pid": timing["pid"],
                    "start": timing["entered_at"],
                    "to_entry_s": queued,
                    "to_first_batch_s": queued + timing["first_batch_at"] - timing["entered_at"],
                }
            )
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["start"]):
        by_worker.setdefault(r["pid"], []).append(r)
    first = [ts[0]["to_first_batch_s"] for ts in by_worker.values()]
    reused = [r for ts in by_worker.values() for r in ts[1:]]
    later = [r["to_first_batch_s"] for r in reused]
    worst = max(later) if later else float("nan")
    result.raw = {"trials": rows, "workers": len(by_worker)}
    result.rows.append(
        Row(
            "dispatch to first batch, 2nd+ trial on a worker: median (max)",
            f"<= {GOAL_S} s",
            f"{secs(median(later))} ({secs(worst)})",
            f"first trial on a new worker: {secs(median(first))}",
            "",
            bool(later) and median(later) <= GOAL_S,
        )
    )
    result.notes += [
        f"{n_trials} trials, parallel 2, 1 CPU each, {len(by_worker)} worker process(es), {len(later)} reused-worker "
        "trials; resnet18 (weights=None), digits (64 train / 32 val images), batch 32, one epoch. Of the median, "
        f"submission to the task's start on the worker took {secs(median([r['to_entry_s'] for r in reused]))} "
        "(Ray), the rest is `fit`'s set-up: data, model, optimizer, first batch. A worker's first trial: its "
        "process was started, and imported torch, while the coordinator started (`hpo.cluster.worker.warm_workers`).",
    ]
    if later and median(later) > GOAL_S:
        result.notes.append(
            "Why the goal is missed: most of the time is `fit`'s set-up on the worker (building the model, loading "
            "and transforming the data, the first batch), CPU work that the machine's load (above) slows down; "
            "the dispatch itself is the part before the task's start."
        )
    return result
