"""P3: dispatch efficiency: trials that each sleep 0.5 s, two at a time; wall time over the ideal.

- hpo: ``run_sweep`` with ``benchmarks.workloads.sleep_once`` (1 CPU per trial, parallel 2), on a Ray
  already started with its workers warm (a long-lived cluster); the wall time is the whole ``run_sweep``
  call: study preparation, coordinator start-up, every trial, shutdown of the coordinator.
- stock Optuna: ``study.optimize(objective, n_trials, n_jobs=2)`` on PostgreSQL, the objective sampling
  the same 5 params and sleeping 0.5 s.
- Ray Tune (full mode): ``Tuner`` with ``OptunaSearch`` (TPE), ``max_concurrent_trials=2``, 1 CPU per trial.

Ideal: n_trials x 0.5 s / 2.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from benchmarks import workloads
from benchmarks.common import TUNE_MISSING, Result, Row, fmt_ratio, fresh_database, quiet_optuna, secs, tune_available
from benchmarks.sweeps import run_hpo, sweep_config
from storage import close_storage

GOAL = 1.03
PARALLEL = 2


def run_optuna(url: str, cfg: Any, n_trials: int) -> tuple[float, float]:
    """Stock Optuna's wall time: ``create_study`` + ``study.optimize`` (the counterpart of the whole
    ``run_sweep`` call), and ``study.optimize`` alone (of hpo's trial loop)."""
    import optuna

    created = time.perf_counter()
    study = optuna.create_study(
        study_name=cfg.study_name + "-optuna",
        storage=url,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.study.sampler.seed, constant_liar=True),
    )
    distributions = cfg.space.distributions

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial._suggest(name, dist) for name, dist in distributions.items()}
        time.sleep(workloads.SLEEP_SECONDS)
        return workloads.curve(params, 1)

    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, n_jobs=PARALLEL)
    end = time.perf_counter()
    close_storage(study._storage)
    return end - created, end - start


def _tune_trainable(config: dict[str, Any]) -> dict[str, float]:
    time.sleep(workloads.SLEEP_SECONDS)
    return {"val_acc": workloads.curve(config, 1)}


def run_tune(cfg: Any, n_trials: int) -> float:
    """Ray Tune on the Ray already running: OptunaSearch (TPE, same seed and space), 2 trials at a time."""
    import optuna
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(
        space=dict(cfg.space.distributions),
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=cfg.study.sampler.seed),
    )
    tuner = tune.Tuner(
        tune.with_resources(_tune_trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(num_samples=n_trials, max_concurrent_trials=PARALLEL, search_alg=search),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="hpo-bench-tune-"), verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    if results.num_errors:
        raise RuntimeError(f"Ray Tune: {results.num_errors} trials failed")
    return wall


def _bare_sleep() -> None:
    time.sleep(workloads.SLEEP_SECONDS)


def run_bare_ray(n_trials: int) -> float:
    """The floor: the same sleeps as plain Ray tasks, 2 at a time, with no study at all (a new task
    submitted as soon as one returns)."""
    import ray

    task = ray.remote(num_cpus=1, max_calls=0)(_bare_sleep)
    ray.get([task.remote() for _ in range(PARALLEL)])  # the function exported, workers leased
    start = time.perf_counter()
    running, left = [task.remote() for _ in range(PARALLEL)], n_trials - PARALLEL
    while running:
        done, running = ray.wait(running, num_returns=1)
        ray.get(done)
        if left:
            running.append(task.remote())
            left -= 1
    return time.perf_counter() - start


def run(admin_url: str, quick: bool = False, *, with_tune: bool | None = None) -> Result:
    quiet_optuna()
    n_trials = 40 if quick else 200
    with_tune = (not quick and tune_available()) if with_tune is None else with_tune
    ideal = n_trials * workloads.SLEEP_SECONDS / PARALLEL
    result = Result("P3", f"Dispatch efficiency ({n_trials} trials x 0.5 s sleep, parallel {PARALLEL})")
    with fresh_database(admin_url, "p3") as url:
        cfg = sweep_config(url, "p3", n_trials=n_trials, parallel=PARALLEL, cpus_per_trial=1, epochs=1)
        hpo_wall, _, sweep = run_hpo(cfg, workloads.sleep_once)
        base_wall, base_loop = run_optuna(url, cfg, n_trials)
    tune_wall = run_tune(cfg, n_trials) if with_tune else float("nan")
    bare_wall = run_bare_ray(n_trials)
    hpo_x, base_x, tune_x = hpo_wall / ideal, base_wall / ideal, tune_wall / ideal
    loop_x, base_loop_x = sweep.elapsed_s / ideal, base_loop / ideal
    result.raw = {
        "n_trials": n_trials,
        "ideal_s": ideal,
        "hpo_wall_s": hpo_wall,
        "hpo_loop_s": sweep.elapsed_s,
        "optuna_wall_s": base_wall,
        "optuna_optimize_s": base_loop,
        "tune_wall_s": tune_wall,
        "bare_ray_s": bare_wall,
    }
    result.rows += [
        Row(
            "wall / ideal, whole call: `run_sweep` vs stock `create_study` + `study.optimize(n_jobs=2)`",
            f"hpo <= {GOAL}",
            f"{hpo_x:.3f} ({secs(hpo_wall)})",
            f"{base_x:.3f} ({secs(base_wall)})",
            fmt_ratio(hpo_wall / base_wall),
            hpo_x <= GOAL,
        ),
        Row(
            "wall / ideal, trials only: hpo's trial loop vs stock `study.optimize(n_jobs=2)`",
            "information",
            f"{loop_x:.3f} ({secs(sweep.elapsed_s)})",
            f"{base_loop_x:.3f} ({secs(base_loop)})",
            fmt_ratio(sweep.elapsed_s / base_loop),
            None,  # the goal is on the whole call, above
        ),
        Row(
            "wall / ideal, the floor: the same sleeps as plain Ray tasks, no study",
            "information",
            "",
            f"{bare_wall / ideal:.3f} ({secs(bare_wall)})",
            "",
            None,
        ),
    ]
    if with_tune:
        result.rows.append(
            Row(
                "wall / ideal, whole call vs Ray Tune (OptunaSearch) `Tuner.fit`",
                f"hpo <= {GOAL}",
                f"{hpo_x:.3f} ({secs(hpo_wall)})",
                f"{tune_x:.3f} ({secs(tune_wall)})",
                fmt_ratio(hpo_wall / tune_wall),
                None,  # the same hpo figure as the first row, which carries the goal
            )
        )
    fixed = hpo_wall - sweep.elapsed_s
    turns = n_trials / PARALLEL
    turn, bare_turn = (sweep.elapsed_s - ideal) / turns, (bare_wall - ideal) / turns
    result.notes += [
        f"Ideal: {n_trials} x {workloads.SLEEP_SECONDS} s / {PARALLEL} = {secs(ideal)}. hpo's figure is the whole "
        f"`run_sweep` call with Ray already up and its workers warm: study preparation, coordinator start-up, "
        f"trials, shutdown. Its trial loop (from the coordinator being ready to the last tell) took "
        f"{secs(sweep.elapsed_s)}: the overhead is {secs(fixed)} before the loop and after it, plus "
        f"{turn * 1e3:.1f} ms each time a slot passes from one trial to the next, where plain Ray tasks take "
        f"{bare_turn * 1e3:.1f} ms.",
        "Stock Optuna: `create_study` then `study.optimize(n_jobs=2)` on PostgreSQL, TPE (constant_liar) over the "
        "same 5 params."
        + (
            " Ray Tune: `Tuner` + `OptunaSearch` (TPE), `max_concurrent_trials=2`, 1 CPU per trial, same Ray."
            if with_tune
            else " Ray Tune not run: " + ("quick mode." if quick else TUNE_MISSING + ".")
        ),
    ]
    if hpo_x > GOAL:
        result.notes.append(
            f"Why the goal is missed: mostly the fixed {secs(fixed)}. The coordinator is a Ray actor, and Ray starts "
            "a new worker process for an actor (it never reuses a task's worker), which then imports Optuna and "
            "SQLAlchemy and opens the storage. The driver starts it, and the trial workers' imports, before it "
            "prepares the study, so the three overlap; the first trials start once the coordinator answers. The "
            "loop itself asks two trials ahead and tells finished trials without waiting for the answer; what "
            "is left per hand-over is above."
        )
    return result
