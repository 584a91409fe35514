"""Shared helpers for the ``trials`` tests: tiny real configs and real PNG folders on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from trials.config import TrainConfig, merge_dotted

#: Small enough to train resnet18 for an epoch in about a second on 2 CPU cores.
TINY: dict[str, Any] = {
    "model": "resnet18",
    "weights": None,  # random initialisation: no download
    "dataset": {"type": "digits", "max_train_samples": 96, "max_val_samples": 60},
    "image_size": 32,
    "batch_size": 32,
    "epochs": 3,
    "lr": 3e-3,
    "aug_strength": 0.0,
    "early_stopping": {"patience": None},
    "checkpoint_every_s": 0,  # the checkpoint and resume tests look at every epoch's checkpoint
}


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., TrainConfig]:
    """``tiny_config(**changes)``: the TINY config with dotted-key changes applied."""

    def make(**changes: Any) -> TrainConfig:
        return TrainConfig.from_dict(merge_dotted(TINY, changes))

    return make


def write_pngs(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10)) -> Path:
    """Write ``counts[class]`` distinct RGB PNGs into ``root/<class>/``; returns ``root``."""
    for c, (name, n) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = Image.new("RGB", size, ((40 * c + 7 * i) % 256, (13 * i) % 256, (90 * c) % 256))
            image.putpixel((i % size[0], c % size[1]), (255, 255, 255))
            image.save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture
def png_tree() -> Callable[..., Path]:
    """``png_tree(root, {"cat": 5, "dog": 4})`` writes real PNG class folders under ``root``."""
    return write_pngs
