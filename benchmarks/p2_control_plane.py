"""P2: control-plane cost per trial, hpo against stock ``study.optimize``, on the same PostgreSQL.

Both run the same number of trials, one at a time, over hpo's default search space (5 params, TPE with
the same seed, MedianPruner(n_startup_trials=5, n_warmup_steps=2)), each trial doing nothing but 20
report + prune-decision round trips with the same values (``benchmarks.workloads.curve``) and completing.

- hpo: ``run_sweep`` with ``benchmarks.workloads.reports_only``: ask (coordinator actor), dispatch a
  Ray task, ``started``, 20 reports through the actor, tell.
- baseline: ``study.optimize(objective, n_trials)`` with ``trial.report`` + ``trial.should_prune`` per step.

Steady state: the time from the first trial's end to the last one's, divided by the trials between
them. Ray's start-up, the coordinator's, and the first trial (a new worker imports hpo) are excluded.
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks import workloads
from benchmarks.common import Result, Row, fmt_ratio, fresh_database, ms, quiet_optuna, ratio, secs
from benchmarks.sweeps import run_hpo, steady_per_trial, sweep_config
from storage import close_storage

GOAL = 1.0
CI_GATE = 2.0


def run_optuna(url: str, cfg: Any, n_trials: int) -> tuple[float, list[float]]:
    """Stock Optuna: ``study.optimize`` on the same storage, search space, sampler seed and pruner."""
    import optuna

    study = optuna.create_study(
        study_name=cfg.study_name + "-optuna",
        storage=url,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.study.sampler.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    distributions = cfg.space.distributions

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial._suggest(name, dist) for name, dist in distributions.items()}
        best = -math.inf
        for step in range(1, workloads.REPORT_STEPS + 1):
            value = workloads.curve(params, step)
            best = max(best, value)
            trial.report(value, step)
            trial.should_prune()  # asked, and ignored like the hpo workload does: 20 round trips each
        return best

    times: list[float] = []
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: times.append(time.perf_counter())])
    wall = time.perf_counter() - start
    close_storage(study._storage)
    return wall, times


def run(admin_url: str, quick: bool = False) -> Result:
    quiet_optuna()
    n_trials = 30 if quick else 100
    result = Result("P2", "Control-plane cost per trial (20 reports, parallel 1, PostgreSQL)")
    with fresh_database(admin_url, "p2") as url:
        cfg = sweep_config(url, "p2", n_trials=n_trials, parallel=1, cpus_per_trial=1, epochs=workloads.REPORT_STEPS)
        # stock first, then hpo, then stock again: the machine is shared, its speed drifts
        base_wall_1, base_times_1 = run_optuna(url, cfg, n_trials)
        hpo_wall, obs, _ = run_hpo(cfg, workloads.reports_only)
        base_wall_2, base_times_2 = run_optuna(url, sweep_config(url, "p2b", n_trials=n_trials, parallel=1), n_trials)
    hpo_per = steady_per_trial(obs.times)
    base_runs = [steady_per_trial(base_times_1), steady_per_trial(base_times_2)]
    base_per = sum(base_runs) / len(base_runs)
    r = ratio(hpo_per, base_per)
    goal_ok = r <= (CI_GATE if quick else GOAL)
    result.raw = {
        "n_trials": n_trials,
        "hpo_per_trial_s": hpo_per,
        "hpo_wall_s": hpo_wall,
        "optuna_per_trial_s": base_runs,
        "optuna_wall_s": [base_wall_1, base_wall_2],
        "ratio": r,
    }
    result.rows.append(
        Row(
            "seconds per trial, steady state",
            f"hpo <= {CI_GATE:g}x stock (CI gate)" if quick else "hpo <= 1.0x stock",
            ms(hpo_per),
            ms(base_per),
            fmt_ratio(r),
            goal_ok,
        )
    )
    result.notes += [
        f"{n_trials} trials each side, parallel 1, hpo's default 5-param space, TPE seed "
        f"{cfg.study.sampler.seed}, MedianPruner(5, 2); every trial makes 20 report + prune-decision round trips "
        "and completes (the prune answer is read and ignored on both sides, so the work is identical).",
        "Steady state: from the first trial's end to the last one's, over the trials in between; excluded are Ray's "
        "start-up (shared by the suite), the coordinator's start-up and the first trial (a new worker). "
        f"Whole-sweep wall times, for information: hpo {secs(hpo_wall)} (run_sweep, Ray already up), stock "
        f"{secs(base_wall_1)} and {secs(base_wall_2)} (run before and after hpo; the baseline is their mean: "
        f"{ms(base_runs[0])} and {ms(base_runs[1])} per trial).",
    ]
    return result
