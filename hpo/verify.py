"""``hpo verify``: is the exported best config worth what the sweep said, on data the sweep never saw?

It retrains the exported config with N training seeds (``train.seed`` + 0..N-1) and a baseline with the
same seeds (by default the same config with the searched hyperparameters reset to the training config's
defaults), each run the very ``fit`` that ``hpo train`` runs, then evaluated on the held-out test split.
The runs are Ray tasks, as many at once as the cluster's CPUs allow. Two answers:

- **reproduced**: the mean retrained val metric is within ``tolerance`` of the value the trial recorded
  (the export's provenance). Val is the same split the trial was selected on: ``dataset.split_seed``, not
  ``train.seed``, decides it, so only the training seed varies.
- **gain**: tuned minus baseline test metric, paired by seed: its mean and 95% confidence interval
  (Student's t over the paired differences). For a loss, a negative gain is the improvement.

The verdict (``Verdict.to_dict``, stable keys) can be written as JSON and is stored on the study as the
user attr ``hpo:verify`` when the study's storage can be opened; ``hpo report`` shows it.
The pure parts (the baseline config, the mean and interval, the reproduction rule) are separate functions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hpo
from hpo import study as studies
from hpo.config import TrainFile, load_train_file
from hpo.errors import ConfigError, HpoError, VerifyError
from hpo.space import DEFAULT_SPACE
from storage import StorageError, mask_url, opened
from trials.config import METRIC_MODES, TrainConfig
from trials.errors import TrialsError, one_line
from trials.reporting import json_safe

#: The fields the default baseline resets to ``TrainConfig``'s defaults: what every sweep searches unless
#: its config says otherwise. A sweep that searched other fields wants ``--baseline other.yaml``.
BASELINE_FIELDS: tuple[str, ...] = tuple(DEFAULT_SPACE)
#: Dataset fields that decide the test split: a baseline must share them, or the two are tested on different data.
_TEST_SPLIT_FIELDS = ("type", "path", "name", "classes", "test_split", "split_seed")

Arm = Literal["tuned", "baseline"]


@dataclass(frozen=True)
class VerifySettings:
    """How to verify: ``seeds`` training seeds per arm, the reproduction ``tolerance`` (absolute, in the
    metric's units: 0.01 is 1 pp of accuracy), the ``baseline`` file (None: the tuned config with default
    hyperparameters), where Ray is, what each run takes, and the storage to record the verdict in (None: the
    export's provenance storage)."""

    seeds: int = 3
    tolerance: float = 0.01
    baseline: str | Path | None = None
    ray_address: str | None = None
    storage: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 1000):
            raise ConfigError(f"--seeds must be between 1 and 1000, got {self.seeds!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"--tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if not (math.isfinite(self.cpus_per_run) and self.cpus_per_run > 0):
            raise ConfigError(f"--cpus-per-run must be > 0, got {self.cpus_per_run!r}")
        if not (math.isfinite(self.gpus_per_run) and self.gpus_per_run >= 0):
            raise ConfigError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run!r}")


@dataclass(frozen=True)
class Run:
    """One finished training run of one arm and seed: its best-epoch val metric and its test metric."""

    arm: Arm
    seed: int
    val: float
    test: float
    status: str
    epochs_run: int


@dataclass(frozen=True)
class Verdict:
    """What ``hpo verify`` found. ``to_dict`` is the JSON document and the study user attr."""

    metric: str
    direction: Literal["maximize", "minimize"]
    seeds: list[int]
    tuned: list[Run]
    baseline: list[Run]
    baseline_source: str  # "defaults" or the baseline file
    study: str
    trial: int
    trial_value: float
    tolerance: float
    verified_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    )

    @property
    def test_metric(self) -> str:
        return "test_" + self.metric.removeprefix("val_")

    @property
    def val_mean(self) -> float:
        return _mean([r.val for r in self.tuned])

    @property
    def reproduced(self) -> bool:
        return reproduces([r.val for r in self.tuned], self.trial_value, self.tolerance)

    @property
    def gain(self) -> tuple[float, tuple[float, float] | None]:
        """Mean tuned-minus-baseline test metric over the seeds, and its 95% CI (None with one seed)."""
        by_seed = {r.seed: r.test for r in self.baseline}
        return mean_ci95([r.test - by_seed[r.seed] for r in self.tuned])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with stable keys (NaN and infinities as null)."""
        mean, ci = self.gain
        return json_safe(
            {
                "metric": self.metric,
                "test_metric": self.test_metric,
                "direction": self.direction,
                "seeds": list(self.seeds),
                "tuned": {"val": [r.val for r in self.tuned], "test": [r.test for r in self.tuned]},
                "baseline": {"val": [r.val for r in self.baseline], "test": [r.test for r in self.baseline]},
                "baseline_source": self.baseline_source,
                "study": self.study,
                "trial": self.trial,
                "trial_value": self.trial_value,
                "val_mean": self.val_mean,
                "tolerance": self.tolerance,
                "reproduced": self.reproduced,
                "gain": {"mean": mean, "ci95": list(ci) if ci is not None else [None, None]},
                "hpo_version": hpo.__version__,
                "verified_at": self.verified_at,
            }
        )


@dataclass(frozen=True)
class VerifyResult:
    verdict: Verdict
    #: Where the verdict was stored (a masked URL), or None; ``note`` says why it was not.
    stored_in: str | None
    note: str | None


# ---------------------------------------------------------------- pure parts


def baseline_config(tuned: TrainConfig, fields: Sequence[str] = BASELINE_FIELDS) -> TrainConfig:
    """``tuned`` with ``fields`` reset to ``TrainConfig``'s defaults (everything else, seed included, kept)."""
    defaults = TrainConfig()
    return tuned.replace(**{name: getattr(defaults, name) for name in fields})


def seeds_for(config: TrainConfig, n: int) -> list[int]:
    """The training seeds of ``n`` runs: the config's own seed, then the next ``n - 1``."""
    return [config.seed + i for i in range(n)]


def reproduces(values: Sequence[float], recorded: float, tolerance: float) -> bool:
    """Whether the mean of ``values`` is within ``tolerance`` of ``recorded`` (False if any is not finite)."""
    mean = _mean(values)
    return math.isfinite(mean) and math.isfinite(recorded) and abs(mean - recorded) <= tolerance + 1e-12


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats  # a dependency of scikit-learn, which hpo requires

    return float(stats.t.ppf(p, df))


def mean_ci95(values: Sequence[float]) -> tuple[float, tuple[float, float] | None]:
    """Mean of ``values`` and its two-sided 95% confidence interval (Student's t, n - 1 degrees of freedom);
    no interval for fewer than 2 values. Non-finite values make both NaN."""
    mean = _mean(values)
    if len(values) < 2:
        return mean, None
    if not math.isfinite(mean):
        return mean, (math.nan, math.nan)
    half = t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, (mean - half, mean + half)


def _mean(values: Sequence[float]) -> float:
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.fmean(values)


# ---------------------------------------------------------------- the command


def verify_file(
    path: str | Path, settings: VerifySettings | None = None, *, log: Callable[[str], None] = print
) -> VerifyResult:
    """Verify the exported config in ``path`` (see the module docstring) and store the verdict on its study.

    Everything is validated before Ray starts: the file and its provenance, the baseline, the data, model
    and weights of both configs. A run that fails on bad input raises that error (exit 2); one that crashes
    raises ``VerifyError`` (exit 1). Not reproducing is not an error: ``verdict.reproduced`` is False.
    """
    settings = settings or VerifySettings()
    doc = load_train_file(path)
    tuned = doc.train
    prov = _provenance(doc, path)
    if tuned.dataset.test_split == 0:
        raise ConfigError(
            f"{path}: train.dataset.test_split: 0 holds no test split out; hpo verify evaluates on one, got 0"
        )
    if settings.baseline is None:
        baseline, source = baseline_config(tuned), "defaults"
    else:
        baseline, source = load_train_file(settings.baseline).train, str(settings.baseline)
        _check_comparable(tuned, baseline, source)
    _preflight(path, tuned)
    if source != "defaults":
        _preflight(source, baseline)

    seeds = seeds_for(tuned, settings.seeds)
    jobs: list[tuple[Arm, int, TrainConfig]] = []
    for seed in seeds:  # tuned and baseline of a seed side by side: pairs finish together
        jobs += [("tuned", seed, tuned.replace(seed=seed)), ("baseline", seed, baseline.replace(seed=seed))]
    runs = _run_all(jobs, settings, log)
    verdict = Verdict(
        metric=tuned.metric,
        direction="maximize" if METRIC_MODES[tuned.metric] == "max" else "minimize",
        seeds=seeds,
        tuned=[r for r in runs if r.arm == "tuned"],
        baseline=[r for r in runs if r.arm == "baseline"],
        baseline_source=source,
        study=prov.study,
        trial=prov.trial,
        trial_value=prov.value,
        tolerance=settings.tolerance,
    )
    url = settings.storage or prov.storage
    try:
        store_verdict(url, prov.study, verdict.to_dict())
    except (StorageError, HpoError) as e:
        return VerifyResult(verdict, None, f"verdict not stored on study {prov.study!r}: {one_line(e)}")
    return VerifyResult(verdict, mask_url(url), None)


def store_verdict(storage_url: str, study_name: str, verdict: Mapping[str, Any]) -> None:
    """Record ``verdict`` (``Verdict.to_dict()``) on the study as the user attr ``hpo:verify``, replacing the
    last one. Raises StorageError when the storage cannot be opened (nothing is created), StudyNotFoundError
    when it holds no such study."""
    with opened(storage_url) as storage:
        study = studies.load(storage, study_name)
        study.set_user_attr(studies.ATTR_VERIFY, json.loads(json.dumps(dict(verdict))))


def _provenance(doc: TrainFile, path: str | Path) -> Any:
    prov = doc.provenance
    if prov is None:
        raise ConfigError(
            f"{path}: no provenance (not written by hpo export); hpo verify compares the retrained value with "
            "the value the trial recorded there"
        )
    if prov.metric != doc.train.metric:
        raise ConfigError(
            f"{path}: provenance.metric is {prov.metric!r} but train.metric is {doc.train.metric!r}; "
            "the recorded value cannot be compared"
        )
    return prov


def _check_comparable(tuned: TrainConfig, baseline: TrainConfig, source: str) -> None:
    if baseline.metric != tuned.metric:
        raise ConfigError(
            f"{source}: train.metric must be the tuned config's {tuned.metric!r}, got {baseline.metric!r}"
        )
    for name in _TEST_SPLIT_FIELDS:
        mine, theirs = getattr(tuned.dataset, name), getattr(baseline.dataset, name)
        if mine != theirs:
            raise ConfigError(
                f"{source}: train.dataset.{name} must be the tuned config's {mine!r} (else the two are tested "
                f"on different test splits), got {theirs!r}"
            )


def _preflight(source: str | Path, config: TrainConfig) -> None:
    from trials.preflight import check

    try:
        check(config)
    except TrialsError as e:
        raise ConfigError(f"{source}: train: {e}") from None


def _run_all(
    jobs: Sequence[tuple[Arm, int, TrainConfig]], settings: VerifySettings, log: Callable[[str], None]
) -> list[Run]:
    """Run every job as a Ray task (one ``cpus_per_run`` each, as many at once as Ray fits) and return the
    runs in job order; logs one line per finished run."""
    import ray

    from hpo.cluster.session import fit_parallel, ray_session
    from trials.train import TEST_METRICS, fit_and_test

    threads = max(1, int(settings.cpus_per_run))
    with ray_session(settings.ray_address) as info:
        at_once = min(len(jobs), fit_parallel(info, settings.cpus_per_run, settings.gpus_per_run))
        log(f"{len(jobs)} runs ({len(jobs) // 2} seeds x tuned, baseline) on {info.describe()}, {at_once} at a time")
        task = ray.remote(fit_and_test).options(
            num_cpus=settings.cpus_per_run, num_gpus=settings.gpus_per_run, max_retries=0
        )
        started = time.monotonic()
        pending = {task.remote(config, threads): i for i, (_, _, config) in enumerate(jobs)}
        runs: dict[int, Run] = {}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            arm, seed, config = jobs[i]
            try:
                summary = ray.get(ref)
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, TrialsError):
                    raise cause from None
                reason = one_line(cause) if isinstance(cause, BaseException) else one_line(e)
                raise VerifyError(f"{arm} run with seed {seed} failed: {reason}") from None
            val = _number(summary["best_metrics"].get(config.metric))
            test = _number(summary["test_metrics"].get(TEST_METRICS[config.metric]))
            runs[i] = Run(arm, seed, val, test, summary["status"], summary["epochs_run"])
            log(
                f"{arm} seed {seed}: {config.metric}={val:.4f} {TEST_METRICS[config.metric]}={test:.4f} "
                f"({summary['status']}, {summary['epochs_run']} epochs; {len(runs)}/{len(jobs)} done "
                f"after {time.monotonic() - started:.0f}s)"
            )
    return [runs[i] for i in range(len(jobs))]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
