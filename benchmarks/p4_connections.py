"""P4: peak PostgreSQL connections during a sweep, against the stock distributed-Optuna pattern.

A thread polls ``pg_stat_activity`` for the sweep's database every 20 ms (``ConnectionCounter``).

- hpo: ``run_sweep`` at parallel 1, 2, 4 and 8 (0.25 CPU per trial, so 8 fit on 2 cores), trials of 5
  epochs x 0.05 s, each epoch reported, median pruning on.
- baseline: the pattern stock Optuna documents for distributed runs: the driver asks and tells, and each
  trial, a Ray task, calls ``optuna.load_study(url)`` and reports through its own storage.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import workloads
from benchmarks.common import Result, Row, fresh_database, quiet_optuna
from benchmarks.sweeps import run_hpo, sweep_config
from storage import close_storage
from storage.postgres import PeakConnections

GOAL = 4
EPOCHS = 5


def stock_trial(url: str, study_name: str, trial_id: int, params: dict[str, Any]) -> str:
    """On a Ray worker: what a stock Optuna trial does (load the study, report each epoch, ask to prune)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=url)
    trial = optuna.Trial(study, trial_id)
    for epoch in range(1, EPOCHS + 1):
        time.sleep(0.05)
        trial.report(workloads.curve(params, epoch), epoch)
        if trial.should_prune():
            return "pruned"
    return "completed"


def run_stock(url: str, cfg: Any, n_trials: int, parallel: int) -> tuple[int, int]:
    """The stock pattern on Ray; returns (peak connections, samples)."""
    import optuna
    import ray
    from optuna.trial import TrialState

    task = ray.remote(num_cpus=2 / parallel, max_retries=0)(stock_trial)
    name = cfg.study_name + "-optuna"
    with PeakConnections(url) as peak:
        study = optuna.create_study(
            study_name=name, storage=url, direction="maximize", sampler=optuna.samplers.TPESampler(seed=0)
        )
        running: dict[Any, Any] = {}
        launched = 0
        while launched < n_trials or running:
            while launched < n_trials and len(running) < parallel:
                trial = study.ask(cfg.space.distributions)
                running[task.remote(url, name, trial._trial_id, trial.params)] = trial
                launched += 1
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                trial = running.pop(ref)
                if ray.get(ref) == "pruned":
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, workloads.curve(trial.params, EPOCHS))
        close_storage(study._storage)
    return peak.peak, peak.samples


def run(admin_url: str, quick: bool = False) -> Result:
    quiet_optuna()
    levels = (2, 8) if quick else (1, 2, 4, 8)
    n_trials = 12 if quick else 24
    base_trials = 20 if quick else 40
    result = Result("P4", "Peak PostgreSQL connections during a sweep")
    peaks: dict[int, int] = {}
    samples: dict[int, int] = {}
    for parallel in levels:
        with fresh_database(admin_url, f"p4_{parallel}") as url:
            cfg = sweep_config(
                url, f"p4-{parallel}", n_trials=n_trials, parallel=parallel, cpus_per_trial=0.25, epochs=EPOCHS
            )
            with PeakConnections(url) as peak:
                run_hpo(cfg, workloads.sleep_epochs)
            peaks[parallel], samples[parallel] = peak.peak, peak.samples
    with fresh_database(admin_url, "p4_stock") as url:
        cfg = sweep_config(url, "p4-stock", n_trials=base_trials, parallel=2)
        stock_peak, stock_samples = run_stock(url, cfg, base_trials, 2)
    result.raw = {"hpo": peaks, "samples": samples, "stock_parallel_2": stock_peak, "stock_trials": base_trials}
    for parallel in levels:
        result.rows.append(
            Row(
                f"peak connections, parallel {parallel}",
                f"hpo <= {GOAL}",
                str(peaks[parallel]),
                str(stock_peak) if parallel == 2 else "",
                f"{peaks[parallel] / stock_peak:.2f}x" if parallel == 2 else "",
                peaks[parallel] <= GOAL,
            )
        )
    result.notes += [
        f"hpo: {n_trials} trials per level, {EPOCHS} epochs of 0.05 s each reported, 0.25 CPU per trial; "
        f"samples per level: {', '.join(f'{p}: {samples[p]}' for p in levels)} (every 20 ms). The count includes "
        "the driver's short-lived storage before and after the trial loop.",
        f"Stock pattern: {base_trials} trials, 2 at a time, each a Ray task calling `optuna.load_study(url)` "
        f"(a new RDBStorage and its pool per trial, kept until garbage collection), the driver asking and "
        f"telling; peak {stock_peak} connections ({stock_samples} samples).",
    ]
    return result
