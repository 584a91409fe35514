"""P2: control-plane cost per trial, hpo against stock ``study.optimize``, on the same PostgreSQL.

Both run the same number of trials, one at a time, over hpo's default search space (5 params, TPE with
the same seed, MedianPruner(n_startup_trials=5, n_warmup_steps=2)), each trial doing nothing but 20
report + prune-decision round trips with the same values (``benchmarks.workloads.curve``) and completing.

- hpo: ``run_sweep`` with ``benchmarks.workloads.reports_only``: ask (coordinator actor), dispatch a
  Ray task, ``started``, 20 reports through the actor, tell.
- baseline: ``study.optimize(objective, n_trials)`` with ``trial.report`` + ``trial.should_prune`` per step.

Each side runs ``repeats`` times (5; 3 in quick mode), interleaved (``benchmarks.common.interleaved``),
each run a new study in the same database; PASS/FAIL on the median of the per-run ratios. Steady state:
the time from a run's first trial's end to its last one's, divided by the trials between them. Ray's
start-up, the coordinator's, and the first trial (a new worker imports hpo) are excluded.
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks import workloads
from benchmarks.common import Result, Row, fresh_database, interleaved, median, ms, quiet_optuna, secs
from benchmarks.sweeps import run_hpo, steady_per_trial, sweep_config
from hpo.config import SweepConfig
from storage import close_storage

GOAL = 1.0
QUICK_GATE = 2.0


def _pruner_params(cfg: SweepConfig) -> dict[str, Any]:
    """hpo's median pruner parameters, for Optuna's own ``MedianPruner`` in the baseline."""
    return {k: v for k, v in cfg.pruner.model_dump(exclude_none=True).items() if k != "type"}


def run_optuna(url: str, cfg: SweepConfig, n_trials: int) -> tuple[float, list[float]]:
    """Stock Optuna: ``study.optimize`` on the same storage, search space, sampler seed and pruner."""
    import optuna

    study = optuna.create_study(
        study_name=cfg.study_name + "-optuna",
        storage=url,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.study.sampler.seed),
        pruner=optuna.pruners.MedianPruner(**_pruner_params(cfg)),
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
    repeats = 3 if quick else 5
    result = Result("P2", "Control-plane cost per trial (20 reports, parallel 1, PostgreSQL)")
    walls: dict[str, list[float]] = {"hpo": [], "optuna": []}
    with fresh_database(admin_url, "p2") as url:
        made = iter(range(1_000))

        def config() -> SweepConfig:  # a new study per run, both sides in the same database
            return sweep_config(url, f"p2-{next(made)}", n_trials=n_trials, parallel=1, epochs=workloads.REPORT_STEPS)

        def hpo() -> float:
            wall, obs, _ = run_hpo(config(), workloads.reports_only)
            walls["hpo"].append(wall)
            return steady_per_trial(obs.times)

        def stock() -> float:
            wall, times = run_optuna(url, config(), n_trials)
            walls["optuna"].append(wall)
            return steady_per_trial(times)

        cfg = config()
        comparison = interleaved(hpo, stock, repeats)
    r = comparison.ratio
    hpo_per, base_per = median(comparison.hpo), median(comparison.baseline)
    result.raw = {
        "n_trials": n_trials,
        "repeats": repeats,
        "hpo_per_trial_s": comparison.hpo,
        "optuna_per_trial_s": comparison.baseline,
        "hpo_wall_s": walls["hpo"],
        "optuna_wall_s": walls["optuna"],
        "ratio": r,  # the median of the paired ratios (tests/test_benchmarks.py gates on it)
    }
    pruner = _pruner_params(cfg)
    result.settings = {
        "n_trials": n_trials,
        "repeats": repeats,
        "parallel": 1,
        "cpus_per_trial": 1,
        "reports_per_trial": workloads.REPORT_STEPS,
        "search_space": f"hpo's default, {len(cfg.space.distributions)} params",
        "sampler": f"TPESampler(seed={cfg.study.sampler.seed})",
        "pruner": {"type": "median", **pruner},
        "storage": "PostgreSQL (one fresh database, a new study per run)",
        "dispatch": "run_sweep: coordinator actor, one Ray task per trial, Ray and 2 workers already up",
    }
    result.baselines = {
        "optuna_study_optimize": {
            "api": "optuna.create_study(storage=URL) + study.optimize(objective, n_trials)",
            "n_trials": n_trials,
            "n_jobs": 1,
            "sampler": f"TPESampler(seed={cfg.study.sampler.seed})",
            "pruner": {"type": "MedianPruner", **pruner},
            "storage": "RDBStorage on the same PostgreSQL database (Optuna's default pool)",
            "objective": "trial.report + trial.should_prune per step, the same values as hpo's workload",
        }
    }
    result.rows.append(
        Row(
            "seconds per trial, steady state",
            f"hpo <= {QUICK_GATE:g}x stock (quick mode)" if quick else f"hpo <= {GOAL:g}x stock",
            ms(hpo_per),
            ms(base_per),
            comparison.fmt_ratio(),
            r <= (QUICK_GATE if quick else GOAL),
            comparison=comparison,
        )
    )
    pruner_args = ", ".join(f"{k}={v}" for k, v in pruner.items())
    result.notes += [
        f"{n_trials} trials each side per run, {repeats} runs each, hpo and stock interleaved; parallel 1, hpo's "
        f"default 5-param space, TPE seed {cfg.study.sampler.seed}, MedianPruner({pruner_args}); every trial makes 20 "
        "report + prune-decision round trips and completes (the prune answer is read and ignored on both sides, "
        "so the work is identical).",
        "Steady state: from a run's first trial's end to its last one's, over the trials in between; excluded are "
        "Ray's start-up (shared by the suite), the coordinator's start-up and the first trial. hpo and stock "
        "columns are the medians of the runs; the ratio is the median of the per-run ratios. Whole-sweep wall "
        f"times, for information: hpo {', '.join(secs(w) for w in walls['hpo'])} (run_sweep, Ray already up); "
        f"stock {', '.join(secs(w) for w in walls['optuna'])}.",
    ]
    return result
