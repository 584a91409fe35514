"""``hpo verify``: is the exported best config worth what the sweep said, on data the sweep never saw?

It retrains the exported config with N training seeds (``train.seed`` + 0..N-1) and a baseline with the
same seeds (by default the same config with the searched hyperparameters reset to the training config's
defaults), each run the very ``fit`` that ``hpo train`` runs, then evaluated on the held-out test split.
The runs are Ray tasks, as many at once as the cluster's CPUs allow. Two answers:

- **reproduced**: the mean retrained val metric is no worse than the value the trial recorded (the export's
  provenance), less what selecting the best of the study's trials explains (the *winner's curse*), by more
  than a tolerance that follows from the validation set's size and the seeds' spread (``judge``). Better than
  the trial is reproduced: the rule is one-sided. Val is the same split the trial was selected on:
  ``dataset.split_seed``, not ``train.seed``, decides it, so only the training seed varies.
- **gain**: tuned minus baseline test metric, paired by seed: its mean and 95% confidence interval
  (Student's t over the paired differences). For a loss, a negative gain is the improvement.

The verdict (``Verdict.to_dict``, stable keys) is printed (``--json``) or written (``-o``) as JSON, and stored on
the study as the user attr ``hpo:verify`` when the study's storage can be opened; ``hpo report`` shows it.
The pure parts (the baseline config, the mean and interval, the reproduction rule and its lines of text) are
separate functions.

The reproduction rule, in the metric's units (``judge``):

- one run's val noise ``sd``: the seeds' standard deviation, and for ``val_acc`` at least the binomial
  standard error ``sqrt(p (1 - p) / n_val)`` of an accuracy ``p`` on ``n_val`` images (with few seeds their
  spread is a poor estimate; a model that gets each image right with probability ``p`` varies that much);
- ``tolerance``: the 95% band of the trial's one run against the mean of ``k`` seeds,
  ``1.96 * sd * sqrt(1 + 1/k)``, never below ``--tolerance`` (default 0.01) nor, for ``val_acc``, one
  validation image (``1/n_val``);
- ``optimism``: the trial was picked as the best of the study's completed trials, so its value is high by
  about ``sd * E[max of N standard normals]``, where N counts the *contenders*, the completed trials within
  2 ``sd`` of the trial's value (trials far worse could not have won by noise; an exported trial that is not
  the study's best gets none);
- reproduced when the shortfall (trial minus mean for a metric to maximize, mean minus trial for one to
  minimize) is at most ``optimism + tolerance``; a negative shortfall is "better than the trial".
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from optuna.trial import TrialState

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
Direction = Literal["maximize", "minimize"]
#: The two-sided 95% quantile of the standard normal.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class VerifySettings:
    """How to verify: ``seeds`` training seeds per arm, the least reproduction ``tolerance`` (absolute, in the
    metric's units: 0.01 is 1 pp of accuracy; the validation set's size and the seeds' spread widen it: see
    ``judge``), the ``baseline`` file (None: the tuned config with default
    hyperparameters), where Ray is, what each run takes (``gpus_per_run`` None: what the sweep's trial had, see
    ``run_gpus``), and the storage to record the verdict in (None: the export's provenance storage)."""

    seeds: int = 3
    tolerance: float = 0.01
    baseline: str | Path | None = None
    ray_address: str | None = None
    storage: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 1000):
            raise ConfigError(f"--seeds must be between 1 and 1000, got {self.seeds!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"--tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if not (math.isfinite(self.cpus_per_run) and self.cpus_per_run > 0):
            raise ConfigError(f"--cpus-per-run must be > 0, got {self.cpus_per_run!r}")
        if self.gpus_per_run is not None and not (math.isfinite(self.gpus_per_run) and self.gpus_per_run >= 0):
            raise ConfigError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run!r}")


@dataclass(frozen=True)
class Run:
    """One finished training run of one arm and seed: its best-epoch val metric and its test metric, and how
    many validation images it was measured on (None: not known)."""

    arm: Arm
    seed: int
    val: float
    test: float
    status: str
    epochs_run: int
    n_val: int | None = None


@dataclass(frozen=True)
class Reproduction:
    """The reproduction rule's figures (``judge``), in the metric's units. ``shortfall`` is how much worse
    than the trial's value the seeds' mean is (negative: better); ``tolerance`` the band it may fall short
    by beyond ``optimism``, the part selection explains; ``tolerance_from`` says which term set it."""

    trial_value: float
    mean: float
    seeds_sd: float  # the seeds' sample standard deviation (0 with one seed)
    k: int  # seeds
    n_val: int | None
    noise_sd: float  # one run's val noise: max(seeds_sd, binomial SE) for accuracy, seeds_sd for a loss
    tolerance: float
    tolerance_from: str  # "95% band", "one val image" or "--tolerance"
    optimism: float
    n_trials: int | None  # the study's completed trials (None: not read)
    contenders: int  # those within 2 noise_sd of the trial's value (0: not the best, or none read)
    shortfall: float
    reproduced: bool

    @property
    def better(self) -> bool:
        """The seeds' mean beat the trial's own value."""
        return self.reproduced and self.shortfall < 0


@dataclass(frozen=True)
class Verdict:
    """What ``hpo verify`` found. ``to_dict`` is the JSON document and the study user attr."""

    metric: str
    direction: Direction
    seeds: list[int]
    tuned: list[Run]
    baseline: list[Run]
    baseline_source: str  # "defaults" or the baseline file
    study: str
    trial: int
    trial_value: float
    tolerance: float  # the least tolerance (``VerifySettings.tolerance``); ``reproduction.tolerance`` is the one used
    #: The study's completed trials' values (None: the study could not be read; ``study_note`` says why).
    study_values: tuple[float, ...] | None = None
    study_note: str | None = None
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
    def n_val(self) -> int | None:
        """The validation images the tuned runs were measured on (None when a run did not say)."""
        sizes = {r.n_val for r in self.tuned}
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def reproduction(self) -> Reproduction:
        return judge(
            self.metric,
            self.direction,
            [r.val for r in self.tuned],
            self.trial_value,
            n_val=self.n_val,
            floor=self.tolerance,
            study_values=self.study_values,
        )

    @property
    def reproduced(self) -> bool:
        return self.reproduction.reproduced

    @property
    def gain(self) -> tuple[float, tuple[float, float] | None]:
        """Mean tuned-minus-baseline test metric over the seeds, and its 95% CI (None with one seed)."""
        by_seed = {r.seed: r.test for r in self.baseline}
        return mean_ci95([r.test - by_seed[r.seed] for r in self.tuned])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with stable keys (NaN and infinities as null)."""
        mean, ci = self.gain
        rep = self.reproduction
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
                "tolerance": rep.tolerance,
                "reproduced": rep.reproduced,
                "reproduction": {
                    "shortfall": rep.shortfall,
                    "seeds_sd": rep.seeds_sd,
                    "n_val": rep.n_val,
                    "noise_sd": rep.noise_sd,
                    "tolerance_from": rep.tolerance_from,
                    "tolerance_floor": self.tolerance,
                    "optimism": rep.optimism,
                    "n_trials": rep.n_trials,
                    "contenders": rep.contenders,
                    "better_than_trial": rep.better,
                },
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


def run_gpus(flag: float | None, recorded: float | None, cluster_gpus: float) -> tuple[float, str]:
    """GPUs of one verify run, and where that number comes from: ``--gpus-per-run`` when given; else what the
    sweep's trial ran with (the export's ``provenance.gpus_per_trial``; one GPU when the file does not say, as
    ``gpus_per_trial: auto``), at most what the cluster has, and none on a cluster without GPUs."""
    if flag is not None:
        return flag, "--gpus-per-run"
    want, source = (1.0, "auto") if recorded is None else (recorded, "the sweep's trial")
    if cluster_gpus <= 0:
        return 0.0, "the cluster has no GPU"
    return min(want, cluster_gpus), source


def seeds_for(config: TrainConfig, n: int) -> list[int]:
    """The training seeds of ``n`` runs: the config's own seed, then the next ``n - 1``."""
    return [config.seed + i for i in range(n)]


def reproduces(values: Sequence[float], recorded: float, tolerance: float, direction: Direction = "maximize") -> bool:
    """Whether the mean of ``values`` is no worse than ``recorded`` by more than ``tolerance`` (one-sided:
    better is reproduced; False if any is not finite)."""
    mean = _mean(values)
    return (
        math.isfinite(mean) and math.isfinite(recorded) and _shortfall(mean, recorded, direction) <= tolerance + 1e-12
    )


def _shortfall(mean: float, recorded: float, direction: Direction) -> float:
    """How much worse ``mean`` is than ``recorded`` (negative: better)."""
    return recorded - mean if direction == "maximize" else mean - recorded


def run_noise_sd(metric: str, value: float, n_val: int | None, seeds_sd: float) -> float:
    """One run's val noise: the seeds' standard deviation, and for ``val_acc`` on ``n_val`` images at least
    the binomial standard error ``sqrt(p (1 - p) / n_val)`` at ``p = value``."""
    if metric != "val_acc" or not n_val or not 0 <= value <= 1:
        return seeds_sd
    return max(seeds_sd, math.sqrt(value * (1 - value) / n_val))


def tolerance_band(metric: str, noise_sd: float, k: int, n_val: int | None, floor: float) -> tuple[float, str]:
    """The tolerance for the mean of ``k`` runs against one run (the trial's), and which term set it: the
    95% band ``Z95 * noise_sd * sqrt(1 + 1/k)``, one validation image (``1/n_val``, for ``val_acc``), or
    ``floor`` (``--tolerance``), whichever is largest."""
    terms = [(Z95 * noise_sd * math.sqrt(1 + 1 / k), "95% band"), (floor, "--tolerance")]
    if metric == "val_acc" and n_val:
        terms.append((1 / n_val, "one val image"))
    return max(terms, key=lambda term: term[0])


def expected_max_normal(n: int) -> float:
    """E[max of ``n`` independent standard normals] (0 for ``n`` <= 1): 0.5642 for 2, 1.5388 for 10,
    1.8675 for 20, 2.5076 for 100. The integral of ``x n phi(x) Phi(x)^(n-1)``, on a fine grid."""
    if n <= 1:
        return 0.0
    from scipy import stats  # a dependency of scikit-learn, which hpo requires

    x = np.linspace(-12.0, 12.0, 24001)
    density = n * stats.norm.pdf(x) * np.exp((n - 1) * stats.norm.logcdf(x))
    return float(np.sum(x * density) * (x[1] - x[0]))


def contenders(study_values: Sequence[float], trial_value: float, noise_sd: float, direction: Direction) -> int:
    """How many of the study's completed trials could have come out on top by noise: those within 2
    ``noise_sd`` of ``trial_value``, the trial included. 0 when another trial beat it (an exported trial that
    is not the best was not selected as the best), the study holds no completed trial, or the trial's value
    is not finite."""
    if not math.isfinite(trial_value) or not study_values:
        return 0
    behind = [_shortfall(v, trial_value, direction) for v in study_values if math.isfinite(v)]
    if any(b < -1e-12 for b in behind):
        return 0
    return max(1, sum(1 for b in behind if b <= 2 * noise_sd + 1e-12))


def judge(
    metric: str,
    direction: Direction,
    values: Sequence[float],
    trial_value: float,
    *,
    n_val: int | None,
    floor: float,
    study_values: Sequence[float] | None,
) -> Reproduction:
    """Whether the seeds' val ``values`` reproduce the trial's ``trial_value`` (the module docstring has the
    rule): within ``optimism + tolerance`` below it (above, for a metric to minimize), or better."""
    mean = _mean(values)
    seeds_sd = statistics.stdev(values) if len(values) > 1 and math.isfinite(mean) else 0.0
    p = trial_value if math.isfinite(trial_value) else mean
    sd = run_noise_sd(metric, p, n_val, seeds_sd)
    tolerance, source = tolerance_band(metric, sd, max(1, len(values)), n_val, floor)
    rivals = contenders(study_values, trial_value, sd, direction) if study_values is not None else 0
    optimism = sd * expected_max_normal(rivals)
    shortfall = _shortfall(mean, trial_value, direction)
    ok = math.isfinite(mean) and math.isfinite(trial_value) and shortfall <= optimism + tolerance + 1e-12
    return Reproduction(
        trial_value=trial_value,
        mean=mean,
        seeds_sd=seeds_sd,
        k=len(values),
        n_val=n_val,
        noise_sd=sd,
        tolerance=tolerance,
        tolerance_from=source,
        optimism=optimism,
        n_trials=len(study_values) if study_values is not None else None,
        contenders=rivals,
        shortfall=shortfall,
        reproduced=ok,
    )


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


def reproduction_lines(v: Verdict) -> list[str]:
    """The verdict's lines of text: the verdict with its figures, where the tolerance comes from, and the
    winner's curse's share."""
    rep = v.reproduction
    f = _fmt
    seeds = ", ".join(map(str, v.seeds))
    if not rep.reproduced:
        head = "reproduced: NO"
    elif rep.better:
        head = f"reproduced: yes (better than the trial by {f(-rep.shortfall)})"
    else:
        head = "reproduced: yes"
    where = "above" if (rep.shortfall > 0) == (v.direction == "minimize") else "below"
    gap = "equal to it" if rep.shortfall == 0 else f"{f(abs(rep.shortfall))} {where} it"
    lines = [
        f"{head}, mean retrained {v.metric} {f(rep.mean)} over seeds {seeds} "
        f"({', '.join(f(r.val) for r in v.tuned)}; sd {f(rep.seeds_sd)}) vs trial {v.trial}'s recorded "
        f"{f(v.trial_value)}: {gap}; allowed {f(rep.optimism + rep.tolerance)} = winner's curse "
        f"{f(rep.optimism)} + tolerance {f(rep.tolerance)}"
    ]
    size = f"{rep.n_val} val images" if rep.n_val else "val size unknown"
    binomial = (
        f", binomial SE {f(math.sqrt(rep.trial_value * (1 - rep.trial_value) / rep.n_val))}"
        if v.metric == "val_acc" and rep.n_val and 0 <= rep.trial_value <= 1
        else ""
    )
    lines.append(
        f"  tolerance {f(rep.tolerance)} from the {rep.tolerance_from} (the larger of: 1.96 x noise sd "
        f"{f(rep.noise_sd)} x sqrt(1 + 1/{rep.k}) for one run vs the mean of {rep.k}"
        + (f"; one val image {f(1 / rep.n_val)}" if v.metric == "val_acc" and rep.n_val else "")
        + f"; --tolerance {f(v.tolerance)}); noise sd from the seeds' sd {f(rep.seeds_sd)}{binomial}, {size}"
    )
    lines.append("  " + _curse_line(v, rep))
    return lines


def _curse_line(v: Verdict, rep: Reproduction) -> str:
    f = _fmt
    if rep.n_trials is None:
        return f"winner's curse: not estimated ({v.study_note or 'the study was not read'})"
    if rep.n_trials == 0:
        return f"winner's curse: none counted (study {v.study!r} holds no completed trial)"
    if rep.contenders == 0:
        return (
            f"winner's curse: none counted (trial {v.trial} is not the best of the study's {rep.n_trials} "
            "completed trials: it was not selected as the best)"
        )
    return (
        f"expected optimism of the best of {rep.n_trials} trials: ~{f(rep.optimism)} "
        f"({rep.contenders} within 2 noise sd of the trial's value: noise sd {f(rep.noise_sd)} x "
        f"E[max of {rep.contenders} standard normals] {expected_max_normal(rep.contenders):.2f}); "
        f"the retrained mean is judged against {f(rep.trial_value - _signed(rep.optimism, v.direction))}"
    )


def _signed(x: float, direction: Direction) -> float:
    return x if direction == "maximize" else -x


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.4f}"


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
    url = settings.storage or prov.storage
    study_values, study_note = completed_values(url, prov.study)
    runs = _run_all(jobs, settings, prov.gpus_per_trial, log)
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
        study_values=study_values,
        study_note=study_note,
    )
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


def completed_values(storage_url: str, study_name: str) -> tuple[tuple[float, ...] | None, str | None]:
    """The values of the study's completed trials (for the winner's curse), or None and why not: the storage
    cannot be opened (nothing is created), holds no such study, or the study has several objectives."""
    try:
        with opened(storage_url) as storage:
            study = studies.load(storage, study_name)
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except (StorageError, HpoError) as e:
        return None, f"study {study_name!r} not read: {one_line(e)}"
    if any(t.values is None or len(t.values) != 1 for t in trials):
        return None, f"study {study_name!r} has several objectives"
    return tuple(float(t.values[0]) for t in trials), None


def fit_test_count(config: TrainConfig, num_threads: int | None = None) -> dict[str, Any]:
    """``trials.train.fit_and_test``, with ``n_val``: the number of validation images the val metric was
    measured on (the split is decided by ``dataset.split_seed``; the base data is cached per process, so
    counting it again after ``fit`` is cheap). A Ray task of ``hpo verify``."""
    from trials.data import load_data
    from trials.train import fit_and_test

    summary = fit_and_test(config, num_threads)
    data = load_data(config.dataset, image_size=config.resolved_image_size, aug_strength=0.0)
    summary["n_val"] = len(cast(Sized, data.val))
    return summary


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
    """``trials.preflight.check``; its error names the field as every command does (``train.weights: ...``)."""
    from trials.preflight import check, field_message

    try:
        check(config)
    except TrialsError as e:
        raise ConfigError(f"{source}: {field_message(e)}") from None


def _run_all(
    jobs: Sequence[tuple[Arm, int, TrainConfig]],
    settings: VerifySettings,
    recorded_gpus: float | None,
    log: Callable[[str], None],
) -> list[Run]:
    """Run every job as a Ray task (``cpus_per_run`` and ``run_gpus`` each, as many at once as Ray fits) and
    return the runs in job order; logs one line per finished run."""
    import ray

    from hpo.cluster.session import fit_parallel, ray_session
    from trials.train import TEST_METRICS

    threads = max(1, int(settings.cpus_per_run))
    with ray_session(settings.ray_address) as info:
        gpus, source = run_gpus(settings.gpus_per_run, recorded_gpus, info.gpus)
        at_once = min(len(jobs), fit_parallel(info, settings.cpus_per_run, gpus))
        log(
            f"{len(jobs)} runs ({len(jobs) // 2} seeds x tuned, baseline) on {info.describe()}, {at_once} at a time, "
            f"{gpus:g} GPU{'s' if gpus != 1 else ''} each ({source})"
        )
        task = ray.remote(fit_test_count).options(num_cpus=settings.cpus_per_run, num_gpus=gpus, max_retries=0)
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
            runs[i] = Run(arm, seed, val, test, summary["status"], summary["epochs_run"], summary.get("n_val"))
            log(
                f"{arm} seed {seed}: {config.metric}={val:.4f} {TEST_METRICS[config.metric]}={test:.4f} "
                f"({summary['status']}, {summary['epochs_run']} epochs; {len(runs)}/{len(jobs)} done "
                f"after {time.monotonic() - started:.0f}s)"
            )
    return [runs[i] for i in range(len(jobs))]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
