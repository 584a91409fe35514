"""P4: peak PostgreSQL connections during a sweep, against stock Optuna's documented distributed patterns.

A thread polls ``pg_stat_activity`` for the run's own database every 20 ms (``PeakConnections``); each side
runs in a fresh database. Every side runs the same trials at each parallelism (1, 2, 4, 8; quick: 2, 8):
``N_TRIALS`` trials of 5 epochs x 0.05 s, each epoch reported and judged by a median pruner (5 startup
trials), 0.25 CPU per trial or worker, so 8 fit on 2 cores.

- hpo: ``run_sweep`` (its coordinator is the only database client).
- per-worker storage (Optuna's tutorial "Easy Parallelization"): ``parallel`` worker processes (Ray actors),
  each calling ``optuna.load_study(url)`` once and ``study.optimize`` for its share of the trials through
  that one storage. The study is created first, once (two processes creating the schema at once fail).
- gRPC storage proxy (Optuna's ``GrpcStorageProxy``): one process runs ``run_grpc_proxy_server`` in front of
  ``get_storage(url)`` (as its docs say); the same workers load the study through ``GrpcStorageProxy``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from benchmarks import workloads
from benchmarks.common import REPO, Result, Row, fresh_database, quiet_optuna
from benchmarks.sweeps import run_hpo, sweep_config
from storage import close_storage
from storage.postgres import PeakConnections

GOAL = 4
EPOCHS = 5
CPUS = 0.25  # per trial (hpo) and per worker process (the baselines)
N_STARTUP_TRIALS = 5
SIZES = {False: ((1, 2, 4, 8), 24), True: ((2, 8), 8)}  # quick -> (parallelisms, trials per run)
SIDES = ("hpo", "per_worker", "grpc_proxy")
_URL_ENV = "HPO_BENCH_P4_PROXY_URL"


def objective(trial: Any, distributions: Mapping[str, Any]) -> float:
    """The baselines' objective: the same params, epochs, reports and pruning as ``workloads.sleep_epochs``."""
    import optuna

    params = {name: trial._suggest(name, dist) for name, dist in distributions.items()}
    for epoch in range(1, EPOCHS + 1):
        time.sleep(0.05)
        trial.report(workloads.curve(params, epoch), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return workloads.curve(params, EPOCHS)


class OptunaWorker:
    """One stock-Optuna worker process (a Ray actor): one storage, opened once, reused for all its trials."""

    def __init__(self, storage: str | tuple[str, int], study_name: str, distributions: Mapping[str, Any]) -> None:
        import optuna
        from optuna.storages import GrpcStorageProxy

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the gRPC proxy's
        self._storage: Any = (
            GrpcStorageProxy(host=storage[0], port=storage[1]) if isinstance(storage, tuple) else storage
        )
        self._study = optuna.load_study(
            study_name=study_name,
            storage=self._storage,
            # neither is stored in the database: every worker passes them (TPE's documented parallel setting)
            sampler=optuna.samplers.TPESampler(constant_liar=True),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=N_STARTUP_TRIALS),
        )
        self._distributions = dict(distributions)

    def optimize(self, n_trials: int) -> int:
        self._study.optimize(lambda t: objective(t, self._distributions), n_trials=n_trials)
        return n_trials


def shares(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` split over ``workers`` as evenly as it goes (the first ones take one more)."""
    return [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(workers)]


def run_workers(storage: str | tuple[str, int], study_name: str, cfg: Any, n_trials: int, parallel: int) -> int:
    """``parallel`` stock workers on Ray, each optimizing its share; returns the trials they finished."""
    import ray

    actor: Any = ray.remote(num_cpus=CPUS, max_restarts=0)(OptunaWorker)
    workers = [actor.remote(storage, study_name, cfg.space.distributions) for _ in range(parallel)]
    try:
        return sum(ray.get([w.optimize.remote(k) for w, k in zip(workers, shares(n_trials, parallel), strict=True)]))
    finally:
        for w in workers:
            ray.kill(w)


def _create_study(storage: Any, name: str) -> None:
    import optuna

    optuna.create_study(study_name=name, storage=storage, direction="maximize")


def _finished(storage: Any, name: str) -> int:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=storage)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_per_worker(url: str, cfg: Any, n_trials: int, parallel: int) -> PeakConnections:
    """Per-worker storages; the peak includes the driver creating the study (its storage closed first)."""
    from storage import open_storage

    with PeakConnections(url) as peak:
        storage = open_storage(url)
        _create_study(storage, "p4-per-worker")
        close_storage(storage)
        run_workers(url, "p4-per-worker", cfg, n_trials, parallel)
    _check(_finished(url, "p4-per-worker"), n_trials, "per-worker storage")
    return peak


def serve_grpc_proxy(host: str, port: int) -> None:
    """The proxy process: ``run_grpc_proxy_server`` in front of ``get_storage(url)``, until terminated."""
    import optuna
    from optuna.storages import get_storage, run_grpc_proxy_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    run_grpc_proxy_server(get_storage(os.environ[_URL_ENV]), host=host, port=port)


@contextlib.contextmanager
def grpc_proxy(url: str) -> Iterator[tuple[str, int]]:
    """A gRPC storage proxy server in a process of its own, ready. The URL goes by environment, not argv
    (``ps`` shows argv)."""
    from optuna.storages import GrpcStorageProxy

    host = "127.0.0.1"
    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    code = f"from benchmarks.p4_connections import serve_grpc_proxy as s; s({host!r}, {port})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), _URL_ENV: url}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    try:
        client = GrpcStorageProxy(host=host, port=port)
        client.wait_server_ready(timeout=120)
        client.close()
        yield host, port
    finally:
        proc.terminate()
        proc.wait(30)


def run_grpc(url: str, cfg: Any, n_trials: int, parallel: int) -> PeakConnections:
    """The gRPC proxy baseline: every client (the driver creating the study, the workers) goes through it."""
    from optuna.storages import GrpcStorageProxy

    with PeakConnections(url) as peak, grpc_proxy(url) as address:
        driver = GrpcStorageProxy(host=address[0], port=address[1])
        _create_study(driver, "p4-grpc")
        run_workers(address, "p4-grpc", cfg, n_trials, parallel)
        finished = _finished(driver, "p4-grpc")
        driver.close()
    _check(finished, n_trials, "gRPC proxy")
    return peak


def _check(finished: int, n_trials: int, side: str) -> None:
    if finished != n_trials:
        raise RuntimeError(f"P4 {side}: {finished} trials finished, not {n_trials}")


def run(admin_url: str, quick: bool = False) -> Result:
    import optuna

    quiet_optuna()
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the gRPC proxy is "experimental"
    levels, n_trials = SIZES[quick]
    result = Result("P4", "Peak PostgreSQL connections during a sweep")
    result.settings = {
        "parallel": list(levels),
        "n_trials": n_trials,
        "epochs": EPOCHS,
        "epoch_s": 0.05,
        "cpus_per_trial": CPUS,
        "pruner": f"median (n_startup_trials={N_STARTUP_TRIALS})",
        "poll_s": 0.02,
    }
    result.baselines = {
        "per_worker": {
            "pattern": "optuna.load_study(url) once per worker process, study.optimize(n_trials=share)",
            "workers": "one Ray actor per parallel slot",
            "cpus_per_worker": CPUS,
            "n_trials": n_trials,
            "sampler": "TPESampler(constant_liar=True)",
            "storage": "Optuna's default for a URL (get_storage: cached RDBStorage, SQLAlchemy's default pool)",
        },
        "grpc_proxy": {
            "pattern": "run_grpc_proxy_server(get_storage(url)) in one process; workers use GrpcStorageProxy",
            "thread_pool": "default (10 threads)",
            "workers": "one Ray actor per parallel slot",
            "cpus_per_worker": CPUS,
            "n_trials": n_trials,
            "optuna": optuna.__version__,
        },
    }
    peaks: dict[str, dict[str, int]] = {side: {} for side in SIDES}
    samples: dict[str, dict[str, int]] = {side: {} for side in SIDES}
    for parallel in levels:
        cfg = None
        with fresh_database(admin_url, f"p4_hpo_{parallel}") as url:
            cfg = sweep_config(
                url,
                f"p4-{parallel}",
                n_trials=n_trials,
                parallel=parallel,
                cpus_per_trial=CPUS,
                epochs=EPOCHS,
                pruner={"n_startup_trials": N_STARTUP_TRIALS},
            )
            with PeakConnections(url) as peak:
                run_hpo(cfg, workloads.sleep_epochs)
            peaks["hpo"][str(parallel)], samples["hpo"][str(parallel)] = peak.peak, peak.samples
        for side, runner in (("per_worker", run_per_worker), ("grpc_proxy", run_grpc)):
            with fresh_database(admin_url, f"p4_{side}_{parallel}") as url:
                peak = runner(url, cfg, n_trials, parallel)
            peaks[side][str(parallel)], samples[side][str(parallel)] = peak.peak, peak.samples
    result.raw = {"peaks": peaks, "samples": samples, "n_trials": n_trials}
    for parallel in levels:
        p = str(parallel)
        hpo, worker, grpc = peaks["hpo"][p], peaks["per_worker"][p], peaks["grpc_proxy"][p]
        result.rows.append(
            Row(
                f"peak connections, parallel {parallel} ({n_trials} trials each side)",
                f"hpo <= {GOAL}",
                str(hpo),
                f"per-worker storage {worker}; gRPC proxy {grpc}",
                f"{hpo / worker:.2f}x; {hpo / grpc:.2f}x" if worker and grpc else "n/a",
                hpo <= GOAL,
            )
        )
    growth = {side: [peaks[side][str(p)] for p in levels] for side in SIDES}
    result.notes += [
        f"Every side: {n_trials} trials per parallelism, {EPOCHS} epochs of 0.05 s each reported, median pruning "
        f"(n_startup_trials={N_STARTUP_TRIALS}), {CPUS} CPU per trial or worker; each run in its own database, "
        "polled every 20 ms. A count, not a timing: one run per cell. hpo's count includes the driver's "
        "short-lived storage before and after the trial loop; the baselines' include the study's creation.",
        "Per-worker storage: Optuna's documented distributed pattern, one process per slot (a Ray actor) calling "
        "`optuna.load_study(url)` once and `study.optimize` for its share, so one storage per process for all its "
        "trials. gRPC proxy: `run_grpc_proxy_server(get_storage(url))` in one process (default 10 threads), every "
        "client through `GrpcStorageProxy`.",
        "Peaks by parallelism ("
        + ", ".join(str(p) for p in levels)
        + "): "
        + "; ".join(f"{side} {growth[side]}" for side in SIDES)
        + ".",
    ]
    result.notes += [verdict(side, growth[side], levels) for side in SIDES[1:]]
    return result


def verdict(side: str, peaks: list[int], levels: tuple[int, ...]) -> str:
    """What a baseline's peaks say, in words: bounded like hpo, or growing with the workers."""
    name = {"per_worker": "Per-worker storage", "grpc_proxy": "The gRPC proxy"}[side]
    if max(peaks) <= GOAL:
        return (
            f"{name} also stays within {GOAL} connections at every parallelism: it is bounded too, and hpo's "
            "difference there is that workers need no database credentials or network reach, not the count."
        )
    if peaks[-1] > peaks[0]:
        why = {
            "per_worker": "every worker process holds its own storage's pool: bounded per worker, not per sweep",
            "grpc_proxy": "the proxy's one storage opens a connection per concurrent request, up to its thread "
            "pool (10 by default): bounded by the proxy, above hpo's goal",
        }[side]
        return (
            f"{name} grows with the workers: {peaks[0]} at parallel {levels[0]} to {peaks[-1]} at parallel "
            f"{levels[-1]}, the same trials; {why}."
        )
    return f"{name} holds up to {max(peaks)} connections, flat across parallelism: bounded, above hpo's goal."
