"""The training config: one typed, validated, plain-data description of a fine-tuning run.

It is what a sweep trial and ``hpo train`` both consume, so production trains exactly what was tuned.
Plain dataclasses (no pydantic, no YAML) so workers need nothing beyond torch; ``hpo`` validates it
with pydantic from YAML, and ``TrainConfig.from_dict`` rebuilds it on a worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from trials.errors import TrainConfigError

#: Metrics ``evaluate`` produces and ``fit`` can monitor, with the direction that is better.
METRIC_MODES: dict[str, Literal["max", "min"]] = {"val_acc": "max", "val_loss": "min"}

DatasetType = Literal["digits", "imagefolder", "torchvision"]
OptimizerName = Literal["adamw", "sgd"]
SchedulerName = Literal["cosine", "none"]
DeviceName = Literal["auto", "cpu", "cuda"]
MetricName = Literal["val_acc", "val_loss"]
OnBadImage = Literal["error", "skip"]
#: DataLoader worker processes: a count, or ``auto`` (``resolve_num_workers``: follow the trial's CPUs).
NumWorkers = int | Literal["auto"]
MAX_NUM_WORKERS = 256
#: Mixed precision (``train.amp``): ``auto`` is bf16 autocast where the CUDA device supports it, else fp16
#: with a gradient scaler; ``bf16``/``fp16`` force one; ``off`` trains in fp32. CPU runs never autocast.
AmpMode = Literal["auto", "bf16", "fp16", "off"]
#: ``amp`` was a bool before it had modes: ``true`` (bf16 on CUDA) reads as ``auto``, ``false`` as ``off``.
#: (YAML 1.1 reads a bare ``off`` as false too, which lands on the same mode.)
_LEGACY_AMP: dict[bool, AmpMode] = {True: "auto", False: "off"}

# pydantic validates these stdlib dataclasses when ``hpo`` loads YAML; unknown keys must be rejected.
_PYDANTIC = {"extra": "forbid"}


def _check(ok: bool, name: str, value: Any, message: str) -> None:
    if not ok:
        raise TrainConfigError(name, value, message)


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images come from.

    - ``digits``: scikit-learn's bundled 8x8 handwritten digits, upscaled to 32x32 RGB (offline demos, tests).
    - ``imagefolder``: ``path/train/<class>/*`` with optional ``path/val/<class>/*`` and
      ``path/test/<class>/*``, or one folder ``path/<class>/*``.
    - ``torchvision``: a built-in dataset by ``name`` (CIFAR10, CIFAR100, ...) under ``path``; ``download``
      fetches it where there is network.

    Three disjoint splits. **test** is held out for ``hpo train`` and ``hpo verify``; sweep trials never
    see it. It is the dataset's own test set (``path/test``, a torchvision dataset's test split) unless
    ``test_split`` is set; otherwise, and whenever there is no such set (digits, an image folder without
    ``test/``), ``test_split`` of every class (default ``DEFAULT_TEST_SPLIT``, 0.2) is carved out first;
    ``test_split: 0`` holds nothing out. **val** (what trials select on) is the dataset's own val set
    (``path/val``, a torchvision val split) unless ``val_split`` is set; otherwise ``val_split`` (default
    0.2) of what remains. Which images fall in which split, and which are kept by ``max_train_samples``
    and ``max_val_samples``, is decided by ``split_seed`` alone (stratified by class): the same for every
    trial, every ``train.seed`` and every process.

    ``on_bad_image`` (image folders only): ``error`` (the default) fails the run on the first image that
    does not decode, naming the file; ``skip`` decodes every image once when the folder is first loaded
    in a process and trains on the rest, logging one warning with the count. That scan is a full read of
    the dataset (about a second per thousand 500x375 JPEGs on one core; more for large photos or a cold
    disk), paid once per worker process, not per trial. ``hpo validate --deep`` lists them up front.
    """

    __pydantic_config__ = _PYDANTIC

    # digits (scikit-learn's, offline), imagefolder (path/<class>/*.jpg) or a torchvision dataset by name
    type: DatasetType = "digits"
    # imagefolder: the root (its val/ and test/ folders are used when present); torchvision: the data root
    path: str | None = None
    name: str | None = None  # torchvision: the dataset class, e.g. CIFAR10
    # fraction of what the test split leaves held out for validation (default 0.2 without a val set)
    val_split: float | None = None
    test_split: float | None = None  # fraction of each class held out first as test (default 0.2 without a test set)
    split_seed: int = 0  # seed of the train/val/test split and of max_*_samples (stratified by class)
    download: bool = False  # torchvision: download the dataset when missing (needs network)
    classes: tuple[int | str, ...] | None = None  # keep only these classes (indices or folder names), relabelled 0..K-1
    # keep at most this many training images (stratified): few-shot, or a quick sweep
    max_train_samples: int | None = None
    max_val_samples: int | None = None  # keep at most this many validation images
    on_bad_image: OnBadImage = "error"  # an unreadable image: error stops at once; skip drops it and says how many

    def __post_init__(self) -> None:
        p = "dataset."
        choices = get_args(OnBadImage)
        _check(
            self.on_bad_image in choices, p + "on_bad_image", self.on_bad_image, f"must be one of {', '.join(choices)}"
        )
        if self.type == "imagefolder":
            _check(bool(self.path), p + "path", self.path, "is required for type imagefolder")
        if self.type == "torchvision":
            _check(bool(self.name), p + "name", self.name, "is required for type torchvision (e.g. CIFAR10)")
        if self.val_split is not None:
            _check(
                _finite(self.val_split) and 0 < self.val_split < 1,
                p + "val_split",
                self.val_split,
                "must be between 0 and 1 (exclusive)",
            )
        if self.test_split is not None:
            _check(
                _finite(self.test_split) and 0 <= self.test_split < 1,
                p + "test_split",
                self.test_split,
                "must be at least 0 and below 1 (0: no test split)",
            )
        _check(
            isinstance(self.split_seed, int) and not isinstance(self.split_seed, bool),
            p + "split_seed",
            self.split_seed,
            "must be an integer",
        )
        if self.classes is not None:
            _check(len(self.classes) >= 2, p + "classes", self.classes, "must list at least 2 classes")
            _check(len(set(self.classes)) == len(self.classes), p + "classes", self.classes, "must not repeat a class")
        for name in ("max_train_samples", "max_val_samples"):
            v = getattr(self, name)
            if v is not None:
                _check(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1, p + name, v, "must be a positive integer"
                )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop a run when the monitored metric has not improved by ``min_delta`` for ``patience`` epochs.

    ``patience: null`` turns early stopping off. The best epoch's weights are restored at the end.
    """

    __pydantic_config__ = _PYDANTIC

    patience: int | None = 3  # epochs without an improvement of min_delta before a trial stops; null: off
    min_delta: float = 0.0  # smallest change of the metric that counts as an improvement

    def __post_init__(self) -> None:
        if self.patience is not None:
            _check(self.patience >= 1, "early_stopping.patience", self.patience, "must be at least 1 (or null)")
        _check(
            _finite(self.min_delta) and self.min_delta >= 0,
            "early_stopping.min_delta",
            self.min_delta,
            "must be a finite number >= 0",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one fine-tuning run. Defaults are in this one block."""

    __pydantic_config__ = _PYDANTIC

    model: str = "resnet18"  # torchvision name (resnet18), timm/<name>, or package.module:function
    # DEFAULT: the model's pretrained weights (torchvision's DEFAULT; timm's for timm/<name>; a user function's
    # module as it returns it), read from the torch hub cache offline. Or a weights name (IMAGENET1K_V1), a local
    # file (.pt/.pth/.safetensors, a checkpoint), or null: random initialisation.
    weights: str | None = "DEFAULT"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    image_size: int | None = None  # null: 32 for digits (their native size after upscaling), else 224
    epochs: int = 10  # epochs per trial (the pruner's steps); early stopping may end it sooner
    lr: float = 1e-3
    batch_size: int = 64
    dropout: float = 0.2
    weight_decay: float = 1e-4
    aug_strength: float = 0.5
    optimizer: OptimizerName = "adamw"  # adamw, or sgd (Nesterov momentum: train.momentum)
    momentum: float = 0.9  # sgd only
    scheduler: SchedulerName = "cosine"  # cosine decay to 0 over the epochs (after warm-up), or none
    warmup_epochs: int = 0  # epochs of linear lr warm-up
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    freeze_backbone_epochs: int = 0  # first epochs train the new head alone, backbone frozen
    backbone_lr_mult: float = 1.0  # the backbone's lr is lr times this (the head's is lr)
    metric: MetricName = "val_acc"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 0  # training seed (init of the head, shuffling, augmentation)
    device: DeviceName = "auto"  # auto: cuda when the trial has a GPU, else cpu
    num_workers: NumWorkers = "auto"  # DataLoader workers; auto follows the trial CPUs (data.resolve_num_workers)
    amp: AmpMode = "auto"  # mixed precision on CUDA (AmpMode); ignored on CPU
    latency_batch: int = 0  # > 0: measure latency_ms, the median forward time of a batch this size, after training
    # with a checkpoint folder (sweep trials): save after an epoch once this many seconds of training have passed
    # since the last save; 0: after every epoch. A retried trial redoes at most this much work plus one epoch.
    checkpoint_every_s: float = 30.0

    def __post_init__(self) -> None:
        # The first failing check raises, so the order of these two halves is part of the behaviour.
        self._check_run()
        self._check_hyperparameters()

    def _check_run(self) -> None:
        """The run's shape: model, image size, latency measurement, checkpoint cadence, epochs."""
        _check(bool(self.model), "model", self.model, "must name a model")
        if self.image_size is not None:
            _check(
                isinstance(self.image_size, int) and 8 <= self.image_size <= 4096,
                "image_size",
                self.image_size,
                "must be an integer between 8 and 4096 (or null)",
            )
        _check(
            isinstance(self.latency_batch, int) and 0 <= self.latency_batch <= 4096,
            "latency_batch",
            self.latency_batch,
            "must be an integer between 0 (not measured) and 4096",
        )
        _check(
            _finite(self.checkpoint_every_s) and self.checkpoint_every_s >= 0,
            "checkpoint_every_s",
            self.checkpoint_every_s,
            "must be a number of seconds >= 0 (0: after every epoch)",
        )
        _check(
            isinstance(self.epochs, int) and 1 <= self.epochs <= 100_000,
            "epochs",
            self.epochs,
            "must be an integer between 1 and 100000",
        )

    def _check_hyperparameters(self) -> None:
        """The optimisation settings and the DataLoader worker count."""
        _check(_finite(self.lr) and 0 < self.lr <= 10, "lr", self.lr, "must be > 0 and <= 10")
        _check(
            isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65_536,
            "batch_size",
            self.batch_size,
            "must be an integer between 1 and 65536",
        )
        _check(_finite(self.dropout) and 0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(
            _finite(self.weight_decay) and 0 <= self.weight_decay <= 1,
            "weight_decay",
            self.weight_decay,
            "must be in [0, 1]",
        )
        _check(
            _finite(self.aug_strength) and 0 <= self.aug_strength <= 1,
            "aug_strength",
            self.aug_strength,
            "must be in [0, 1]",
        )
        _check(_finite(self.momentum) and 0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _check(
            isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0,
            "warmup_epochs",
            self.warmup_epochs,
            "must be an integer >= 0",
        )
        _check(
            _finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "label_smoothing",
            self.label_smoothing,
            "must be in [0, 1)",
        )
        _check(
            isinstance(self.freeze_backbone_epochs, int) and self.freeze_backbone_epochs >= 0,
            "freeze_backbone_epochs",
            self.freeze_backbone_epochs,
            "must be an integer >= 0",
        )
        _check(
            _finite(self.backbone_lr_mult) and 0 < self.backbone_lr_mult <= 100,
            "backbone_lr_mult",
            self.backbone_lr_mult,
            "must be > 0 and <= 100",
        )
        _check(
            self.num_workers == "auto"
            or (
                isinstance(self.num_workers, int)
                and not isinstance(self.num_workers, bool)
                and 0 <= self.num_workers <= MAX_NUM_WORKERS
            ),
            "num_workers",
            self.num_workers,
            f"must be auto or an integer between 0 and {MAX_NUM_WORKERS}",
        )

    @property
    def resolved_image_size(self) -> int:
        """``image_size``, or its default for the dataset: 32 for digits, 224 (ImageNet's) otherwise."""
        if self.image_size is not None:
            return self.image_size
        return 32 if self.dataset.type == "digits" else 224

    @property
    def mode(self) -> Literal["max", "min"]:
        """Whether a larger (``max``) or smaller (``min``) ``metric`` is better."""
        return METRIC_MODES[self.metric]

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-safe dict that ``from_dict`` turns back into an equal config."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from a plain dict (for example one made by ``to_dict``); unknown keys are errors."""
        return _build(cls, data, "")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied; dotted keys (``early_stopping.patience``) reach nested configs."""
        return TrainConfig.from_dict(merge_dotted(self.to_dict(), changes))


def upgrade_legacy(train: Any) -> Any:
    """A raw ``train`` mapping with old spellings read as today's (``amp: true`` -> ``auto``, ``false`` ->
    ``off``); anything else is returned as it is. Files and stored trials written before keep loading."""
    if isinstance(train, dict) and isinstance(train.get("amp"), bool):
        return {**train, "amp": _LEGACY_AMP[train["amp"]]}
    return train


def merge_dotted(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``changes`` set; a key ``a.b`` sets ``base['a']['b']``. ``base`` is not modified."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            sub = out.get(head)
            out[head] = merge_dotted(sub if isinstance(sub, dict) else {}, {rest: value})
        else:
            out[key] = value
    return out


def searchable_fields() -> dict[str, type]:
    """Fields a sweep may search, by dotted name, with their Python type (int, float, str or bool).

    Every scalar field of the training config (and of its nested early-stopping config) is searchable;
    ``str`` fields can only be searched as categorical choices.
    """
    out: dict[str, type] = {}
    for prefix, klass in (("", TrainConfig), ("early_stopping.", EarlyStoppingConfig)):
        hints = get_type_hints(klass)
        for f in dataclasses.fields(klass):
            base = _scalar_type(hints[f.name])
            if base is not None and f.name not in _NOT_SEARCHABLE:
                out[prefix + f.name] = base
    return out


#: Scalar fields that are not hyperparameters: the objective itself and where/how the run executes.
_NOT_SEARCHABLE = frozenset({"metric", "device", "num_workers", "latency_batch"})


def _scalar_type(hint: Any) -> type | None:
    args = [a for a in get_args(hint) if a is not type(None)]
    if hint in (int, float, str, bool):
        return hint
    if args and all(isinstance(a, str) for a in args):  # Literal["a", "b"]
        return str
    if len(args) == 1 and args[0] in (int, float, str, bool):  # Optional[int]
        return args[0]
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Reject values of the wrong scalar type or outside a Literal's choices (pydantic does this for YAML)."""
    args = get_args(hint)
    if value is None:
        _check(type(None) in args, name, value, "must not be null")
        return
    if hint == NumWorkers:  # an int or "auto": __post_init__ checks it with one message for both
        return
    literals = [a for a in args if isinstance(a, str)]
    if literals:
        _check(value in literals, name, value, f"must be one of {', '.join(literals)}")
        return
    base = _scalar_type(hint)
    if base is bool:
        _check(isinstance(value, bool), name, value, "must be true or false")
    elif base is int:
        _check(isinstance(value, int) and not isinstance(value, bool), name, value, "must be an integer")
    elif base is float:
        _check(isinstance(value, int | float) and not isinstance(value, bool), name, value, "must be a number")
    elif base is str:
        _check(isinstance(value, str), name, value, "must be a string")


def _build(klass: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise TrainConfigError(path.rstrip(".") or "train", data, "must be a mapping")
    if klass is TrainConfig:
        data = upgrade_legacy(data)
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TrainConfigError(path + unknown[0], data[unknown[0]], f"unknown key (valid: {', '.join(sorted(names))})")
    hints = get_type_hints(klass)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if hint in (DatasetConfig, EarlyStoppingConfig):
            value = _build(hint, value, f"{path}{key}.")
        elif isinstance(value, list):
            value = tuple(value)
        else:
            _check_type(path + key, value, hint)
        kwargs[key] = value
    try:
        return klass(**kwargs)
    except TrainConfigError as e:
        raise TrainConfigError(
            path + e.field if path and not e.field.startswith(path) else e.field, e.value, e.reason
        ) from None
