"""The learning-curve benchmark's tasks and configs: what ``record`` trains, fixed before any curve exists.

Every task fine-tunes the quickstart's backbone (a ResNet-18 pretrained on digits 0-4, ``make pretrain``) with
a new head at 32 px, ``freeze_backbone_epochs: 1`` (the head alone first, as users run it), for ``EPOCHS``
epochs, early stopping off (the replay applies the sweep's early stopping to the recorded curve). Splits are
fixed per task (``split_seed: 0``): train, val (what searches select on) and test (what claims are judged on)
are disjoint. The configs are the same list on every task, drawn once from hpo's default search space
(``hpo.space.DEFAULT_SPACE``) by ``configs()``.

Which tasks tune hpo's defaults and which carry the claim is decided in ``PROTOCOL.md`` (``TUNING``,
``CLAIM``, ``APART`` below repeat it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.search_tasks import PRETRAINED

DATA_ROOT = Path("~/.cache/hpo/curves-data").expanduser()
EPOCHS = 12
FREEZE = 1
IMAGE_SIZE = 32
N_CONFIGS = 32
#: training seeds: every config with seed 0; configs 0..SEEDED_SUBSET-1 also with seed 1
SEEDS = (0, 1)
SEEDED_SUBSET = 8
CONFIG_DRAW_SEED = 20261203

TUNING = ("shapes-tuning", "shapes-tuning-few")
CLAIM = ("digits59", "digits59-few", "shapes", "patches")
APART = ("lfw",)
ALL = TUNING + CLAIM + APART


@dataclass(frozen=True)
class Task:
    name: str
    dataset: dict[str, Any]

    def train_config(self, params: dict[str, Any], seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
        """The ``train:`` config of one recorded run (a dict ``trials.config.TrainConfig.from_dict`` takes)."""
        return {
            "model": "resnet18",
            "weights": str(PRETRAINED),
            "dataset": dict(self.dataset),
            "image_size": IMAGE_SIZE,
            "epochs": epochs,
            "freeze_backbone_epochs": FREEZE,
            "backbone_lr_mult": 0.5,
            "num_workers": 0,
            "early_stopping": {"patience": None},
            "seed": seed,
            **params,
        }


def _split(n_train: int | None, val: float, test: float) -> dict[str, Any]:
    out: dict[str, Any] = {"val_split": val, "test_split": test, "split_seed": 0}
    if n_train is not None:
        out["max_train_samples"] = n_train
    return out


def task(name: str) -> Task:
    """Task ``name``; its images are written on first use (``DATA_ROOT``), deterministic."""
    if name in ("digits59", "digits59-few"):
        # digits 5-9: ~900 images; test 30% (~270), val 40% of the rest (~250), train 160 of the rest or 8/class
        ds = {"type": "digits", "classes": [5, 6, 7, 8, 9], **_split(40 if name.endswith("few") else 160, 0.4, 0.3)}
        return Task(name, ds)
    if name in ("shapes", "shapes-few", "shapes-tuning", "shapes-tuning-few"):
        from benchmarks.shapes import CLAIM_KINDS, TUNING_KINDS, write_imagefolder

        kinds = TUNING_KINDS if name.startswith("shapes-tuning") else CLAIM_KINDS
        folder = "shapes-tuning" if name.startswith("shapes-tuning") else "shapes"
        root = write_imagefolder(DATA_ROOT / folder, kinds, 240, size=IMAGE_SIZE, seed=7)
        # 1,200 images: test 25% (300), val 30% of the rest (270), train 160 of the rest or 8/class
        few = name.endswith("few")
        return Task(name, {"type": "imagefolder", "path": str(root), **_split(40 if few else 160, 0.3, 0.25)})
    if name == "patches":
        root = write_patches(DATA_ROOT / "patches")
        return Task(name, {"type": "imagefolder", "path": str(root), **_split(160, 0.3, 0.25)})
    if name == "lfw":
        root = write_lfw(DATA_ROOT / "lfw")
        # 200 images: test 30% (60), val 30% of the rest (42), train ~98
        return Task(name, {"type": "imagefolder", "path": str(root), **_split(None, 0.3, 0.3)})
    raise ValueError(f"unknown task {name!r} (known: {', '.join(ALL)})")


def write_patches(root: Path, per_class: int = 150) -> Path:
    """Patches of scikit-learn's two sample photos (china, flower): 8 classes, one per quadrant of each
    photo; each image a random 40-80 px crop inside its quadrant, scaled to 32 px."""
    marker = root / f".complete-{per_class}"
    if marker.is_file():
        return root
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    for p, photo in enumerate(photos):
        h, w = photo.shape[:2]
        for q in range(4):
            y0, x0 = (q // 2) * h // 2, (q % 2) * w // 2
            folder = root / f"photo{p}-q{q}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = random.Random(f"patch-{p}-{q}")
            for i in range(per_class):
                s = rng.randint(40, 80)
                y, x = y0 + rng.randint(0, h // 2 - s), x0 + rng.randint(0, w // 2 - s)
                crop = Image.fromarray(photo[y : y + s, x : x + s]).resize((IMAGE_SIZE, IMAGE_SIZE))
                crop.save(folder / f"{i:05d}.png")
    marker.touch()
    return root


def write_lfw(root: Path) -> Path:
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-faces, 25 x 25 grey, written as RGB PNGs."""
    marker = root / ".complete"
    if marker.is_file():
        return root
    import numpy as np
    from PIL import Image
    from skimage.data import lfw_subset

    images = lfw_subset()
    for i, img in enumerate(images):
        folder = root / ("face" if i < 100 else "nonface")
        folder.mkdir(parents=True, exist_ok=True)
        grey = (np.clip(img, 0, 1) * 255).astype("uint8")
        Image.fromarray(grey).convert("RGB").save(folder / f"{i:05d}.png")
    marker.touch()
    return root


def configs(n: int = N_CONFIGS) -> list[dict[str, Any]]:
    """``n`` configs drawn uniformly from hpo's default search space (log scale where it is), one fixed seed."""
    from hpo.space import DEFAULT_SPACE

    rng = random.Random(CONFIG_DRAW_SEED)
    out = []
    for _ in range(n):
        params: dict[str, Any] = {}
        for name, spec in DEFAULT_SPACE.items():
            if "choices" in spec:
                params[name] = rng.choice(spec["choices"])
            elif spec.get("log"):
                params[name] = math.exp(rng.uniform(math.log(spec["low"]), math.log(spec["high"])))
            else:
                params[name] = rng.uniform(spec["low"], spec["high"])
        out.append(params)
    return out


def runs(task_name: str) -> list[tuple[int, int]]:
    """The (config index, seed) pairs ``record`` trains for a task, in recording order: every config with
    seed 0 first, then the seeded subset with seed 1."""
    return [(i, SEEDS[0]) for i in range(N_CONFIGS)] + [(i, SEEDS[1]) for i in range(SEEDED_SUBSET)]
