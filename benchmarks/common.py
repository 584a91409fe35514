"""What every benchmark shares: the result rows, a fresh PostgreSQL database, Ray, percentiles and timers."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("HPO_BENCH_PG") or os.environ.get(
    "HPO_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Row:
    """One goal of one benchmark: what hpo measured, what the baseline measured, and the verdict.

    ``passed`` is None for rows that carry information without a goal.
    """

    metric: str
    goal: str
    hpo: str
    baseline: str
    ratio: str
    passed: bool | None
    #: the measurement behind the row: raw samples per side, how many repeats, the ratio's 95% CI
    comparison: Comparison | None = None


@dataclass
class Result:
    """A benchmark's rows, the notes that explain them (sizes, method, caveats) and its raw numbers."""

    key: str  # P1 ... P9
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: hpo's settings for this benchmark (sizes, parallelism, ...), written to BENCHMARKS.json
    settings: dict[str, Any] = field(default_factory=dict)
    #: each baseline by name with the settings it ran with, e.g. {"ray_tune": {"reuse_actors": True, ...}}
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.rows)


# ---------------------------------------------------------------------------------------------------
# Repeated, interleaved comparisons


@dataclass
class Comparison:
    """Paired samples of one measure, hpo and a baseline run one after the other ``repeats`` times
    (interleaved, so drift on a shared machine hits both sides alike); ratios are hpo / baseline per pair."""

    hpo: list[float]
    baseline: list[float]

    @property
    def repeats(self) -> int:
        return min(len(self.hpo), len(self.baseline))

    @property
    def ratios(self) -> list[float]:
        return [ratio(a, b) for a, b in zip(self.hpo, self.baseline, strict=False)]

    @property
    def ratio(self) -> float:
        """The median of the per-pair ratios (what PASS/FAIL is decided on)."""
        return median(self.ratios)

    @property
    def ci95(self) -> tuple[float, float]:
        """A 95% bootstrap confidence interval of the median ratio (percentile method, fixed seed)."""
        return bootstrap_ci(self.ratios)

    def as_dict(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "hpo": list(self.hpo),
            "baseline": list(self.baseline),
            "ratios": self.ratios,
            "ratio_median": self.ratio,
            "ratio_ci95": list(self.ci95),
        }

    def fmt_ratio(self) -> str:
        lo, hi = self.ci95
        return f"{fmt_ratio(self.ratio)} [{lo:.2f}, {hi:.2f}] (n={self.repeats})"


def bootstrap_ci(values: Sequence[float], q: float = 95.0, resamples: int = 2000) -> tuple[float, float]:
    """The ``q``% percentile-bootstrap interval of the median of ``values`` (seeded: reruns agree)."""
    import random

    xs = [v for v in values if math.isfinite(v)]
    if not xs:
        return (math.nan, math.nan)
    if len(xs) == 1:
        return (xs[0], xs[0])
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    tail = (100.0 - q) / 2
    return (percentile(meds, tail), percentile(meds, 100.0 - tail))


def interleaved(
    hpo: Callable[[], float], baseline: Callable[[], float], repeats: int = 5, *, warmup: bool = False
) -> Comparison:
    """Run ``hpo`` and ``baseline`` alternately ``repeats`` times each (hpo first on even repeats, the
    baseline first on odd ones) and keep what each returns (a time, a count, ...). ``warmup`` runs each
    once first, unrecorded."""
    if warmup:
        hpo()
        baseline()
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(float(hpo()))
            b.append(float(baseline()))
        else:
            b.append(float(baseline()))
            a.append(float(hpo()))
    return Comparison(a, b)


# ---------------------------------------------------------------------------------------------------
# Numbers


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with the precision a reader needs."""
    if math.isnan(seconds):
        return "n/a"
    v = seconds * 1e3
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def fmt_ratio(r: float) -> str:
    return "n/a" if math.isnan(r) else f"{r:.2f}x"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# ---------------------------------------------------------------------------------------------------
# PostgreSQL


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one benchmark run, dropped afterwards."""
    from storage.postgres import create_database, database_url, drop_database

    url = database_url(admin_url, f"hpo_bench_{prefix}_{uuid.uuid4().hex[:8]}")
    create_database(url)
    try:
        yield url
    finally:
        drop_database(url)


def insert_complete_trials(
    conn: Any, study_id: int, numbers: Sequence[int], times: Callable[[int], tuple[Any, Any]]
) -> list[int]:
    """Insert COMPLETE rows for trial ``numbers`` of ``study_id`` into Optuna's ``trials`` table in one
    statement (``times(number)`` -> (start, complete)) and return their ids in order: the bulk path the
    10,000-trial benchmark studies are built by (P1, P9)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials_t = models.TrialModel.__table__
    rows = []
    for n in numbers:
        started, completed = times(n)
        rows.append(
            {
                "number": n,
                "study_id": study_id,
                "state": TrialState.COMPLETE,
                "datetime_start": started,
                "datetime_complete": completed,
            }
        )
    inserted = conn.execute(trials_t.insert().returning(trials_t.c.trial_id, sort_by_parameter_order=True), rows)
    return [r[0] for r in inserted]


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------------
# Ray


def prepare_environment() -> None:
    """Ray workers must import ``benchmarks.workloads``: the repo root goes on PYTHONPATH before Ray starts."""
    paths = [str(REPO), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@contextlib.contextmanager
def ray_cluster(num_cpus: int | None = None) -> Iterator[float]:
    """A local Ray for the whole run (shared by the benchmarks, like a long-lived cluster); yields its
    start-up time in seconds. A Ray already initialised here (the tests' fixture) is used as it is."""
    import logging

    import ray

    prepare_environment()
    if ray.is_initialized():
        yield 0.0
        return
    temp = Path("/tmp") / f"hpo-bench-ray-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
    start = time.perf_counter()
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        num_gpus=0,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        _temp_dir=str(temp),
    )
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()


def warm_workers(n: int) -> float:
    """Start ``n`` Ray workers with the benchmark workloads imported (what a long-lived cluster has);
    returns the seconds it took. Benchmarks that exclude worker start-up call this first."""
    import ray

    from benchmarks import workloads

    start = time.perf_counter()
    task = ray.remote(num_cpus=0.001)(workloads.warm_up)
    ray.get([task.remote(0.5) for _ in range(n)])
    return time.perf_counter() - start


def tune_available() -> bool:
    """Whether Ray Tune (the ``bench`` extra, ``ray[tune]``) is installed: P3 and P5 compare against it."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray.tune") is not None and importlib.util.find_spec("pandas") is not None
    except ImportError:
        return False


TUNE_MISSING = "Ray Tune is not installed: pip install 'ray[tune]' (the bench extra)"
