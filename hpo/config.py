"""The sweep config: one YAML file validated into typed models, with every default in one place.

Validation happens before hpo touches the database, Ray or the data; every error names the field
path and the bad value in one line (``ConfigError``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hpo import files
from hpo.coordinator import pruning
from hpo.coordinator.promotion import PromotionRule
from hpo.errors import ConfigError
from hpo.space import SearchSpace, SpaceError, parse_space
from storage.url import parse_url
from trials.config import (
    METRIC_MODES,
    EarlyStoppingConfig,
    TrainConfig,
    merge_dotted,
    searchable_fields,
    upgrade_legacy,
)
from trials.errors import TrainConfigError

DEFAULT_STORAGE = "sqlite:///hpo.db"
STORAGE_ENV = "HPO_STORAGE"
EXPORT_FORMAT: Literal[1] = 1

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplerConfig(_Model):
    """Optuna sampler: tpe (default), random, cmaes, gp or qmc, with an optional seed. TPE's random start-up
    trials (``n_startup_trials``) default to a fifth of ``study.n_trials``, at least 4 and at most 10."""

    name: Literal["tpe", "random", "cmaes", "gp", "qmc"] = "tpe"  # Optuna's sampler of that name
    seed: int | None = None  # the sampler's seed: the same seed and trials give the same suggestions
    n_startup_trials: int | None = Field(None, ge=0, description="TPE only; default: n_trials / 5 within [4, 10]")

    @model_validator(mode="after")
    def _startup_only_for_tpe(self) -> SamplerConfig:
        if self.n_startup_trials is not None and self.name != "tpe":
            raise ValueError(f"n_startup_trials is a TPE setting; sampler {self.name!r} takes none")
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


#: What a trial can be judged on, and which way is better. The first objective of a multi-objective study
#: (the primary) must be one that every epoch reports, so that pruning can act on it.
OBJECTIVES: dict[str, Literal["maximize", "minimize"]] = {
    "val_acc": "maximize",
    "val_loss": "minimize",
    "params_m": "minimize",
    "latency_ms": "minimize",
}
Objective = Literal["val_acc", "val_loss", "params_m", "latency_ms"]


class StudyConfig(_Model):
    name: str | None = None  # default: the config file's name without .yaml
    metric: Literal["val_acc", "val_loss"] = "val_acc"  # what trials are judged and pruned on, every epoch
    metrics: list[Objective] | None = None  # multi-objective: directions follow each; the first is the primary
    latency_batch: int = Field(32, ge=1, le=4096, description="images per batch when latency_ms is measured")
    direction: Literal["maximize", "minimize"] | None = None  # default: from the metric
    n_trials: int = Field(20, ge=1, le=1_000_000, description="finished (COMPLETE or PRUNED) trials to reach")
    timeout: float | None = Field(None, gt=0, description="stop launching trials after this many seconds")
    sampler: SamplerConfig = SamplerConfig()

    @property
    def startup_trials(self) -> int:
        """TPE's random start-up trials for this study: as configured, else sized to ``n_trials``."""
        from hpo.study import default_startup_trials

        given = self.sampler.n_startup_trials
        return default_startup_trials(self.n_trials) if given is None else given

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _STUDY_NAME.match(v):
            raise ValueError(
                f"must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, got {v!r}"
            )
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError(f"lists two or more objectives (for one, use study.metric), got {v!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"must not repeat an objective, got {v!r}")
        if v[0] not in METRIC_MODES:
            raise ValueError(
                f"must start with val_acc or val_loss (the primary: every epoch reports it, and pruning acts on it), "
                f"got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _direction(self) -> StudyConfig:
        if self.metrics is not None:
            if "metric" in self.model_fields_set and self.metric != self.metrics[0]:
                raise ValueError(f"metric {self.metric!r} is not the first of metrics {self.metrics!r}")
            object.__setattr__(self, "metric", self.metrics[0])
        wanted = "maximize" if METRIC_MODES[self.metric] == "max" else "minimize"
        if self.direction is None:
            object.__setattr__(self, "direction", wanted)
        elif self.direction != wanted:
            raise ValueError(f"direction {self.direction!r} contradicts metric {self.metric!r} (better is {wanted})")
        return self


class PrunerConfig(_Model):
    """Which of Optuna's pruners decides "prune?" at each epoch, with its parameters: ``type`` is ``median``
    (the default), ``percentile``, ``successive_halving``, ``hyperband`` or ``none``; each takes the
    parameters of Optuna's pruner of that name, with Optuna's defaults, except that the median rule starts
    judging after 2 trials and at epoch 2 (``n_startup_trials: 2, n_warmup_steps: 2``; epochs count from 1),
    and that the median and percentile rules never judge head-only epochs (``SweepConfig``'s warm-up rule).
    ``asha`` is hpo's own: successive halving in promotion mode (``hpo.coordinator.promotion``), whose losing
    trials are paused (their checkpoints kept) and may be resumed later; it takes ``min_resource`` (default
    ``train.freeze_backbone_epochs + 1``), ``reduction_factor`` (3) and ``max_paused_gb`` (10; null: no limit).
    Parameters a type does not take are refused;
    after validation the ones it takes hold their values, the others None."""

    # which pruner: Optuna's of that name, asha (hpo's promotion mode), or none
    type: Literal["median", "percentile", "successive_halving", "hyperband", "asha", "none"] = "median"
    percentile: float | None = Field(None, validate_default=True)  # required by the percentile type
    n_startup_trials: int | None = None  # median, percentile: no pruning until this many trials completed
    n_warmup_steps: int | None = Field(None, description="no pruning before this epoch (epochs count from 1)")
    interval_steps: int | None = None  # median, percentile: judge every this many epochs
    n_min_trials: int | None = None  # median, percentile: judge an epoch once this many trials reported it
    min_resource: int | Literal["auto"] | None = None  # successive halving, hyperband, asha: the first rung's epoch
    max_resource: int | Literal["auto"] | None = None  # hyperband: the most epochs a trial runs (auto: train.epochs)
    reduction_factor: int | None = None  # successive halving, hyperband, asha: 1 in this many trials goes on
    min_early_stopping_rate: int | None = None  # successive halving: moves the first rung to later epochs
    bootstrap_count: int | None = None  # successive halving: trials a rung needs before it promotes any
    max_paused_gb: float | None = Field(None, description="asha: disk for paused trials' checkpoints (null: no limit)")

    #: asha's parameters and defaults (``min_resource``: ``SweepConfig`` makes it freeze_backbone_epochs + 1)
    ASHA_DEFAULTS: ClassVar[dict[str, Any]] = {"min_resource": 1, "reduction_factor": 3, "max_paused_gb": 10.0}

    #: where hpo's default differs from Optuna's
    #: (the median rule's: kept by the learning-curve benchmark's tuning phase, benchmarks/curves/RESULTS.md)
    HPO_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {"median": {"n_startup_trials": 2, "n_warmup_steps": 2}}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @field_validator("min_resource", "max_resource", mode="before")
    @classmethod
    def _resource(cls, v: Any) -> Any:
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        raise ValueError(f"must be 'auto' or a whole number of steps, got {v!r}")

    @classmethod
    def defaults(cls, kind: str) -> dict[str, Any]:
        """The parameters pruner type ``kind`` takes, with their defaults (None: required)."""
        if kind == "none":
            return {}
        if kind == "asha":
            return dict(cls.ASHA_DEFAULTS)
        return {**pruning.parameters(kind), **cls.HPO_DEFAULTS.get(kind, {})}

    @field_validator(
        "percentile",
        "n_startup_trials",
        "n_warmup_steps",
        "interval_steps",
        "n_min_trials",
        "min_resource",
        "max_resource",
        "reduction_factor",
        "min_early_stopping_rate",
        "bootstrap_count",
        "max_paused_gb",
    )
    @classmethod
    def _parameter(cls, v: Any, info: ValidationInfo) -> Any:
        kind, name = info.data.get("type"), str(info.field_name)
        if kind is None:  # the type itself is wrong: that is the error to report
            return v
        takes = cls.defaults(kind)
        if v is None:
            if name in takes and takes[name] is None:
                raise ValueError(f"required for type {kind!r} (Optuna's {kind} pruner has no default)")
            return v
        if name not in takes:
            raise ValueError(f"not a parameter of pruner type {kind!r} (it takes: {', '.join(takes) or 'nothing'})")
        given = {k: x for k, x in info.data.items() if k in takes and x is not None}
        if kind == "asha":
            problem = _asha_problem(name, v)
        else:
            problem = pruning.param_problem(kind, name, v, {**takes, **given, name: v})
        if problem:
            raise ValueError(f"{problem}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> PrunerConfig:
        for name, default in self.defaults(self.type).items():
            if name == "max_paused_gb" and name in self.model_fields_set:
                continue  # null given: no limit
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        self.rule()  # the rule checks its parameters too: a config that passed builds
        return self

    def rule(self) -> pruning.PrunerRule | PromotionRule | None:
        """The pruner's settings as the coordinator takes them (None for ``type: none``)."""
        if self.type == "none":
            return None
        if self.type == "asha":
            assert isinstance(self.min_resource, int) and isinstance(self.reduction_factor, int)
            return PromotionRule(self.min_resource, self.reduction_factor)
        return pruning.RULES[self.type](**{name: getattr(self, name) for name in self.defaults(self.type)})


def _asha_problem(name: str, value: Any) -> str | None:
    """What is wrong with asha's parameter ``name`` = ``value``, or None."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if name == "min_resource" and not (whole and value >= 1):
        return "must be a whole number of epochs, at least 1"
    if name == "reduction_factor" and not (whole and value >= 2):
        return "must be a whole number, at least 2"
    if name == "max_paused_gb" and not (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
        return "must be a number of gigabytes above 0, or null for no limit"
    return None


class ResourcesConfig(_Model):
    """Ray resources one trial takes; fractions share a GPU (0.5 = two trials per GPU). ``gpus_per_trial: auto``
    (the default) is one GPU per trial when the Ray cluster has GPUs, none when it has none. ``cpus_per_trial:
    auto`` (the default) is a GPU node's CPUs per GPU times the trial's GPUs (at least 1), 1 for a trial without
    a GPU (``hpo.sweep.run.place``); the data loader's workers follow it (``train.num_workers: auto``).

    ``ranks_per_trial``: the processes one trial trains on, data-parallel (``trials.distributed``; rank 0 reports,
    checkpoints and answers the pruner). Default: ``gpus_per_trial`` when that is a whole number above 1 (one
    rank per GPU, NCCL), else 1; on a cluster without GPUs, N ranks train on CPUs (gloo), the trial's CPUs split
    among them (``cpus_per_trial: auto`` is then 1 per rank). A value that contradicts ``gpus_per_trial`` is
    refused."""

    # CPUs per trial; auto: a GPU node's CPUs per GPU x the trial's GPUs, 1 without GPUs
    cpus_per_trial: float | Literal["auto"] = "auto"
    # GPUs per trial (0.5: two per GPU); auto: 1 when the cluster has GPUs, else 0
    gpus_per_trial: float | Literal["auto"] = "auto"
    ranks_per_trial: int | None = None  # data-parallel ranks per trial (default: gpus_per_trial when above 1, else 1)

    @property
    def ranks(self) -> int:
        """The ranks of one trial (``ranks_per_trial``, or what ``gpus_per_trial`` implies)."""
        if self.ranks_per_trial is not None:
            return self.ranks_per_trial
        gpus = self.gpus_per_trial
        return int(gpus) if not isinstance(gpus, str) and gpus > 1 else 1

    @field_validator("ranks_per_trial", mode="before")
    @classmethod
    def _ranks(cls, v: Any) -> Any:
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024):
            return v
        raise ValueError(f"must be a whole number of processes, at least 1 (and at most 1024), got {v!r}")

    @model_validator(mode="after")
    def _ranks_match_gpus(self) -> ResourcesConfig:
        gpus, ranks = self.gpus_per_trial, self.ranks_per_trial
        if ranks is None or isinstance(gpus, str) or gpus == 0:
            return self
        implied = int(gpus) if gpus >= 1 else 1  # a fraction of a GPU is one rank's share
        if ranks != implied:
            raise TrainConfigError(
                "ranks_per_trial",
                ranks,
                f"does not match gpus_per_trial: {gpus:g} (each rank trains on one whole GPU); "
                f"set it to {implied}, or leave it out",
            )
        return self

    @field_validator("cpus_per_trial", mode="before")
    @classmethod
    def _cpus(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1024):
            return v
        raise ValueError(f"must be 'auto' or a number of CPUs above 0 and at most 1024, got {v!r}")

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float | str) -> float | str:
        if isinstance(v, str):
            return v
        if not (0 <= v <= 64):
            raise ValueError(f"must be 'auto' or a number of GPUs from 0 to 64, got {v!r}")
        if v > 1 and v != int(v):
            raise ValueError(f"must be a fraction of one GPU (<= 1) or a whole number of GPUs, got {v!r}")
        return v


class StorageOptions(_Model):
    retry_timeout: float = Field(60.0, ge=0, le=86_400, description="seconds to keep retrying a lost database")


class SweepConfig(_Model):
    """A whole sweep: what to search, how to run trials, and the fixed training config."""

    study: StudyConfig = StudyConfig()  # the Optuna study: its name, objectives, trial budget and sampler
    storage: str | None = None  # study storage URL; --storage and $HPO_STORAGE win; default: sqlite:///hpo.db
    storage_options: StorageOptions = StorageOptions()  # how the sweep lives through database outages
    search_space: dict[str, Any] | None = None  # what to search (see below); merged over the five defaults
    pruner: PrunerConfig = PrunerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    parallel: int | None = Field(None, ge=1, le=10_000, description="trials at once; default: what Ray's resources fit")
    max_failures: int = Field(5, ge=0, description="failed trials a sweep tolerates before it stops launching")
    # 2: a preempted or lost node (Ray's NodeDiedError) or a dead worker costs a trial nothing but the epochs
    # since its last checkpoint, as Determined and Ray Tune's FailureConfig on a cluster retry; a trial's own
    # error (an exception, a non-finite metric, out of GPU memory) is never retried
    retries: int = Field(
        2,
        ge=0,
        le=100,
        description="times a trial whose worker, node or driver died runs again, from its last checkpoint",
    )
    # 20 s: within Kubernetes' default grace period (30 s) with room to stop, tell and shut Ray down; a trial
    # stopped then loses only what it trained since its last checkpoint (train.checkpoint_every_s)
    drain_timeout: float = Field(
        20.0, ge=0, le=86_400, description="seconds running trials may finish after a SIGTERM before they are stopped"
    )
    # trials' checkpoints under <output_dir>/<study>/trial-NNNNN; a path every node shares, or an fsspec URL (s3://...)
    output_dir: str = "runs"
    tensorboard: bool = False  # per-trial TensorBoard runs under <output_dir>/<study>/tensorboard/
    train: TrainConfig = TrainConfig()

    @field_validator("output_dir")
    @classmethod
    def _reachable_output_dir(cls, v: str) -> str:
        """A local folder, or an fsspec URL every node reaches (``s3://`` with s3fs, ``gs://`` with gcsfs,
        ``file:///shared/runs``): its scheme known and its backend installed, checked before anything is written."""
        from trials.storage_fs import protocol_problem

        problem = protocol_problem(v)
        if problem is not None:
            raise ValueError(f"{problem}, got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _train_owned_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            data = {**data, "train": upgrade_legacy(data["train"])}
            train = data["train"]
            for key, where in (("early_stopping", "early_stopping"), ("metric", "study.metric")):
                if key in train:
                    raise ValueError(f"train.{key} is set by the sweep's {where}; move it there")
            space = data.get("search_space")
            if isinstance(space, dict):
                clash = sorted(k for k in {*_defaulted_space_keys(), *space} if k in train)
                if clash:
                    raise ValueError(
                        f"train.{clash[0]} is also in search_space; fix it there instead "
                        f"(search_space: {{{clash[0]}: {train[clash[0]]!r}}})"
                    )
            else:
                clash = sorted(k for k in _defaulted_space_keys() if k in train)
                if clash:
                    raise ValueError(
                        f"train.{clash[0]} is searched by default; fix it in search_space instead "
                        f"(search_space: {{{clash[0]}: {train[clash[0]]!r}}})"
                    )
        return data

    @model_validator(mode="after")
    def _warm_up_past_head_only_epochs(self) -> SweepConfig:
        """Unless ``pruner.n_warmup_steps`` is given, the median and percentile rules judge no epoch that
        trained the new head alone: their warm-up is at least ``train.freeze_backbone_epochs + 1``. Epochs
        with a frozen backbone rank trials by how fast the head fits (more optimizer steps, i.e. smaller
        batches, look better), not by where fine-tuning ends: on the tuning task, the val accuracy after the
        head-only epoch was anti-correlated with the final one (``benchmarks/tune_defaults.py``)."""
        p = self.pruner
        if p.type in ("median", "percentile") and "n_warmup_steps" not in p.model_fields_set:
            warmup = self.train.freeze_backbone_epochs + 1
            if warmup > (p.n_warmup_steps or 0):
                object.__setattr__(self, "pruner", p.model_copy(update={"n_warmup_steps": warmup}))
        return self

    @model_validator(mode="after")
    def _asha_past_head_only_epochs(self) -> SweepConfig:
        """asha's first rung is after the head-only epochs unless ``pruner.min_resource`` is given; a given one
        must leave a rung below ``train.epochs`` (else no trial would ever be judged)."""
        p = self.pruner
        if p.type != "asha":
            return self
        if "min_resource" not in p.model_fields_set:
            object.__setattr__(
                self, "pruner", p.model_copy(update={"min_resource": self.train.freeze_backbone_epochs + 1})
            )
        elif isinstance(p.min_resource, int) and p.min_resource >= self.train.epochs:
            raise ValueError(
                f"pruner.min_resource: must be below train.epochs ({self.train.epochs}), or no trial is ever "
                f"judged, got {p.min_resource!r}"
            )
        return self

    @model_validator(mode="after")
    def _batches_split_over_ranks(self) -> SweepConfig:
        """A data-parallel trial splits its global ``batch_size`` evenly over its ranks (``trials.distributed``):
        every batch size the sweep can run must be a multiple of the ranks and at least 2 per rank, checked
        here rather than failing trial by trial."""
        ranks = self.resources.ranks
        if ranks <= 1:
            return self
        from optuna.distributions import CategoricalDistribution, IntDistribution

        where = "train.batch_size"
        values: list[Any] = [self.train.batch_size]
        for param in self.space.params:
            if param.name != "batch_size":
                continue
            d = param.distribution
            where = "search_space.batch_size"
            if d is None:
                values = [param.value]
            elif isinstance(d, CategoricalDistribution):
                values = list(d.choices)
            elif isinstance(d, IntDistribution) and d.step % ranks == 0 and d.low % ranks == 0:
                values = [d.low]
            else:
                raise ValueError(
                    f"search_space.batch_size: with {ranks} ranks per trial the batch is split evenly over them; "
                    f"give choices that are multiples of {ranks} (e.g. [32, 64, 128]), got {d!r}"
                )
        bad = [v for v in values if not isinstance(v, int) or v % ranks or v < 2 * ranks]
        if bad:
            raise ValueError(
                f"{where}: with {ranks} ranks per trial (resources) a batch is split evenly over them: each must be "
                f"a multiple of {ranks} and at least {2 * ranks}, got {bad[0]!r}"
            )
        return self

    @property
    def space(self) -> SearchSpace:
        return parse_space(self.search_space, searchable_fields())

    @property
    def base_train(self) -> TrainConfig:
        """The training config every trial starts from: ``train`` plus the sweep's metric and early stopping."""
        latency = self.study.latency_batch if "latency_ms" in self.objectives else 0
        return self.train.replace(
            metric=self.study.metric, early_stopping=_plain(self.early_stopping), latency_batch=latency
        )

    @property
    def objectives(self) -> list[str]:
        """What the study optimizes: ``study.metrics``, or ``[study.metric]``; the first is the primary."""
        return list(self.study.metrics or [self.study.metric])

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[m] for m in self.objectives]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """The study's direction (the config's, or the one its metric implies)."""
        assert self.study.direction is not None, "StudyConfig fills the direction from the metric"
        return self.study.direction

    @property
    def study_name(self) -> str:
        assert self.study.name is not None, "load_sweep_config fills the study name"
        return self.study.name


def _plain(es: EarlyStoppingConfig) -> dict[str, Any]:
    return {"patience": es.patience, "min_delta": es.min_delta}


def _defaulted_space_keys() -> set[str]:
    from hpo.space import DEFAULT_SPACE

    return set(DEFAULT_SPACE)


class Provenance(_Model):
    """Where an exported config came from."""

    study: str
    trial: int
    value: float
    metric: str
    direction: str
    storage: str  # password removed
    hpo_version: str
    exported_at: str  # UTC, ISO 8601
    # GPUs the trial ran with (hpo verify's default --gpus-per-run); absent from files exported before it was
    # recorded, and where the trial's node was not recorded
    gpus_per_trial: float | None = None


class TrainFile(_Model):
    """What ``hpo train`` reads: an ``hpo export`` file (with provenance) or a hand-written training file."""

    version: Literal[1] = EXPORT_FORMAT
    train: TrainConfig
    provenance: Provenance | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_train(cls, data: Any) -> Any:
        """Files exported before ``train.amp`` had modes keep loading (``true``: auto, ``false``: off)."""
        if isinstance(data, dict) and "train" in data:
            return {**data, "train": upgrade_legacy(data["train"])}
        return data


# ---------------------------------------------------------------------------------------------------
# Loading


def load_sweep_config(path: str | Path, **overrides: Any) -> SweepConfig:
    """Read and validate a sweep config; ``overrides`` (dotted keys such as ``study.n_trials``) win.

    Also resolves the study name (override, then ``study.name``, then the file name) and the storage
    (override, then ``$HPO_STORAGE``, then ``storage:``, then ``sqlite:///hpo.db``).
    """
    data = _load_mapping(path)
    data = merge_dotted(data, {k: v for k, v in overrides.items() if v is not None})
    data.setdefault("study", {})
    if isinstance(data["study"], dict) and not data["study"].get("name"):
        data["study"] = {**data["study"], "name": _name_from_path(path)}
    cfg = _validate(SweepConfig, data, str(path))
    storage = overrides.get("storage") or os.environ.get(STORAGE_ENV) or cfg.storage or DEFAULT_STORAGE
    parse_url(storage)  # a malformed URL is a config error: found before anything is opened
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{path}: tensorboard: true needs the tensorboard package (pip install tensorboard), got true"
            ) from None
    cfg = cfg.model_copy(update={"storage": storage})
    _check_space(cfg, str(path))
    return cfg


def load_train_file(path: str | Path) -> TrainFile:
    """Read and validate a training file (an ``hpo export`` result or a hand-written ``train:`` file)."""
    data = _load_mapping(path)
    return _validate(TrainFile, data, str(path))


def _load_mapping(path: str | Path) -> dict[str, Any]:
    try:
        data = files.load_file(path)
    except files.YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping (key: value), got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: key {bad[0]!r} must be a string")
    return data


def _name_from_path(path: str | Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._\-]", "-", Path(path).stem).strip("-._") or "study"
    return stem[:128]


def _validate(model: type[Any], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from None


def _check_space(cfg: SweepConfig, source: str) -> None:
    """Parse the search space and make sure every bound and choice is a valid training config."""
    try:
        space = cfg.space
    except SpaceError as e:
        raise ConfigError(f"{source}: search_space.{e.path}: {e.reason}, got {_show(e.value)}") from None
    base = cfg.base_train.to_dict()
    for param in space.params:
        for value in param.candidates():
            try:
                TrainConfig.from_dict(merge_dotted(base, {param.name: value}))
            except TrainConfigError as e:
                where = (
                    "value"
                    if param.is_fixed
                    else "range"
                    if len(param.candidates()) == 2 and not _is_cat(param)
                    else "choices"
                )
                raise ConfigError(
                    f"{source}: search_space.{param.name}: {where} includes {_show(value)}, "
                    f"but train.{e.field} {e.reason}"
                ) from None


def _is_cat(param: Any) -> bool:
    from optuna.distributions import CategoricalDistribution

    return isinstance(param.distribution, CategoricalDistribution)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(e: pydantic.ValidationError) -> str:
    """One line: the first error's field path, its message and the bad value (and how many more)."""
    errors = e.errors()
    first = errors[0]
    loc = [str(x) for x in first["loc"]]
    kind = first["type"]
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, TrainConfigError):
        text = f"{_join(loc, ctx_error.field.split('.'))}: {ctx_error.reason}, got {_show(ctx_error.value)}"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        text = f"{'.'.join(loc)}: unknown key"
    elif kind in ("missing", "missing_keyword_argument"):
        text = f"{'.'.join(loc)}: required field is missing"
    else:
        msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        text = f"{'.'.join(loc)}: {msg}" if loc else msg
        if kind not in ("value_error", "assertion_error"):  # our own validators put the value in the message
            text += f", got {_show(first.get('input'))}"
    text = " ".join(text.split())  # one line whatever the input held
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text


def _join(loc: list[str], field: list[str]) -> str:
    """``train.dataset`` + ``dataset.path`` -> ``train.dataset.path`` (the overlap written once)."""
    for k in range(min(len(loc), len(field)), 0, -1):
        if loc[-k:] == field[:k]:
            return ".".join(loc + field[k:])
    return ".".join(loc + field)
