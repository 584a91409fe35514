"""Weight files: atomic saves, the hpo-model/1 file, weights_only loading, RNG state round trips."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trials.checkpoint import (
    MODEL_FORMAT,
    atomic_save,
    load_file,
    load_model_file,
    rng_state,
    save_model,
    set_rng_state,
)
from trials.config import TrainConfig
from trials.errors import ModelError


class Opaque:
    """Not a tensor nor a plain value: ``weights_only`` loading must refuse it."""


def test_atomic_save_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.pt"
    atomic_save({"v": torch.arange(3)}, path)
    atomic_save({"v": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["f.pt"]


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.pt"
    atomic_save({"v": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a local function
        atomic_save({"v": lambda: 2}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.pt"]


def test_save_model_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    config = TrainConfig(model="resnet18", epochs=2)
    save_model(
        tmp_path / "m.pt", model, config, num_classes=4, class_names=["a", "b", "c", "d"], metrics={"val_acc": 0.75}
    )
    loaded = load_model_file(tmp_path / "m.pt")
    assert loaded["format"] == MODEL_FORMAT
    assert TrainConfig.from_dict(loaded["config"]) == config
    assert loaded["num_classes"] == 4 and loaded["class_names"] == ["a", "b", "c", "d"]
    assert loaded["metrics"] == {"val_acc": 0.75}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model_state"][k], v)
    torch.load(tmp_path / "m.pt", weights_only=True)  # loadable without trusting the file


def test_load_model_file_rejects_other_files(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "raw.pt")
    with pytest.raises(ModelError, match="is not an hpo-model/1 file"):
        load_model_file(tmp_path / "raw.pt")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "weights file not found"),
        (b"garbage", "cannot load"),
        ("opaque", "cannot load"),  # a pickled object: refused by weights_only, never executed
    ],
)
def test_load_file_errors_are_one_line(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "opaque":
        torch.save({"obj": Opaque()}, path)
    with pytest.raises(ModelError, match=re.escape(str(path))) as info:
        load_file(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_rng_state_restores_every_generator_and_loads_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = rng_state()
    atomic_save(state, tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
