"""The fine-tuning tasks that search benchmarks run, sized for a 2-core machine, and which seeds they use.

Two uses, kept apart on purpose:

- **tuning** (``benchmarks/tune_defaults.py``) chose hpo's search defaults (TPE start-up trials, the sampler,
  the pruner's warm-up): on ``shapes-tuning`` (``benchmarks.shapes.TUNING_KINDS``) with seeds from
  ``TUNING_SEEDS``;
- **the claim** (P5, ``benchmarks/p5_search.py``) measures them: on ``digits`` (the quickstart's task,
  digits 5-9 on the backbone pretrained on digits 0-4) and ``shapes`` (``benchmarks.shapes.CLAIM_KINDS``,
  classes the tuning never saw) with seeds from ``CLAIM_SEEDS``.

A seed varies the sampler's seed, ``train.seed`` and the data split (``dataset.split_seed``) together.
Every task fine-tunes the quickstart's backbone (ResNet-18 pretrained on digits 0-4) with a new head,
the quickstart's training settings, at 32 px, on a subsample, for ``EPOCHS`` epochs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO

QUICKSTART = REPO / "examples" / "quickstart.yaml"
PRETRAINED = Path("~/.cache/hpo/pretrained/resnet18-digits04/model.pt").expanduser()
SHAPES_ROOT = Path("~/.cache/hpo/bench-data").expanduser()

TUNING_SEEDS = (1000, 1001, 1002, 1003)
CLAIM_SEEDS = (0, 1, 2, 3, 4)

EPOCHS = 4  # the quickstart trains 6; 4 keeps P5's 2,000 trials within about 30 minutes on 2 cores
MAX_TRAIN_SAMPLES = 200  # the tuning pool's
MAX_VAL_SAMPLES = 150
#: P5's sizes: 2,000 trials must fit in about 30 minutes on 2 cores
CLAIM_TRAIN_SAMPLES = 120
CLAIM_VAL_SAMPLES = 100
SHAPES_PER_CLASS = 160
#: the quickstart's space scaled to the subsample: its batch sizes [32, 64, 128] on ~580 training images
#: give 18/9/4.5 steps per epoch; [16, 32, 64] on 200 give 12.5/6/3
SPACE: dict[str, Any] = {
    "lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
    "batch_size": [16, 32, 64],
    "aug_strength": {"low": 0.0, "high": 0.6},
}


@dataclass(frozen=True)
class Task:
    """A training config (``train:`` of a sweep config) for one dataset, without the split seed."""

    name: str
    train: dict[str, Any]
    classes: int

    def for_seed(self, seed: int) -> dict[str, Any]:
        """The training config with ``seed`` as ``train.seed`` and as the data split's seed."""
        train = copy.deepcopy(self.train)
        train["seed"] = seed
        train["dataset"]["split_seed"] = seed
        return train


def _sized(train: dict[str, Any], n_train: int, n_val: int) -> dict[str, Any]:
    train["dataset"] = {**train["dataset"], "max_train_samples": n_train, "max_val_samples": n_val}
    return train


def _base_train() -> dict[str, Any]:
    train: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())["train"]
    train.update(epochs=EPOCHS, image_size=32, num_workers=0, weights=str(PRETRAINED))
    return train


def digits(n_train: int = MAX_TRAIN_SAMPLES, n_val: int = MAX_VAL_SAMPLES) -> Task:
    """The quickstart's task: digits 5-9, subsampled."""
    train = _sized(_base_train(), n_train, n_val)
    return Task("digits", train, classes=len(train["dataset"]["classes"]))


def shapes(
    kinds: tuple[str, ...],
    name: str,
    per_class: int = SHAPES_PER_CLASS,
    n_train: int = MAX_TRAIN_SAMPLES,
    n_val: int = MAX_VAL_SAMPLES,
) -> Task:
    """Shapes of ``kinds`` written offline as an ImageFolder (made on first use, then cached)."""
    from benchmarks.shapes import write_imagefolder

    root = write_imagefolder(SHAPES_ROOT / name, kinds, per_class, size=32, seed=0)
    train = _base_train()
    train["dataset"] = {"type": "imagefolder", "path": str(root)}
    return Task(name, _sized(train, n_train, n_val), classes=len(kinds))


def claim_tasks() -> list[Task]:
    from benchmarks.shapes import CLAIM_KINDS

    n, v = CLAIM_TRAIN_SAMPLES, CLAIM_VAL_SAMPLES
    # shapes: 1,200 images, about 360 held out for test
    return [digits(n, v), shapes(CLAIM_KINDS, "shapes", per_class=240, n_train=n, n_val=v)]


def tuning_task() -> Task:
    from benchmarks.shapes import TUNING_KINDS

    return shapes(TUNING_KINDS, "shapes-tuning")
