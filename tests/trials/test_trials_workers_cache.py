"""``train.num_workers: auto``, the per-process weights cache, and the timings ``fit`` records."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trials.checkpoint import save_model
from trials.config import TrainConfig
from trials.data import MAX_AUTO_WORKERS, load_data, resolve_num_workers
from trials.errors import TrainConfigError
from trials.models import _read_weights, build_model, clear_weights_cache
from trials.train import fit, make_loaders


def test_num_workers_defaults_to_auto() -> None:
    assert TrainConfig().num_workers == "auto"
    assert TrainConfig.from_dict({"num_workers": 3}).num_workers == 3
    assert TrainConfig.from_dict({"num_workers": "auto"}).to_dict()["num_workers"] == "auto"


@pytest.mark.parametrize("bad", [-1, 257, "four", 2.5, True, None, "Auto"])
def test_bad_num_workers_is_named_with_its_value(bad: Any) -> None:
    with pytest.raises(TrainConfigError) as info:
        TrainConfig.from_dict({"num_workers": bad})
    assert info.value.field == "num_workers"
    assert info.value.value == bad
    assert repr(bad) in str(info.value)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.trials.conftest import write_pngs

    root = write_pngs(tmp_path_factory.mktemp("folder"), {"a": 6, "b": 6})
    folder = load_data(
        TrainConfig.from_dict({"dataset": {"type": "imagefolder", "path": str(root)}}).dataset,
        image_size=16,
        aug_strength=0.0,
    )
    digits = load_data(TrainConfig().dataset, image_size=32, aug_strength=0.0)
    return {"folder": folder.train, "digits": digits.train}


@pytest.mark.parametrize(
    ("setting", "kind", "cpus", "expected"),
    [
        (3, "folder", 1, 3),  # a number is taken as it is
        (0, "folder", 16, 0),
        ("auto", "folder", 1, 0),  # one CPU: a worker would take it from the training step
        ("auto", "folder", 2, 1),
        ("auto", "folder", 4, 3),  # one CPU left for the training loop
        ("auto", "folder", 64, MAX_AUTO_WORKERS),
        ("auto", "digits", 16, 0),  # tensors in memory: nothing to decode
    ],
)
def test_auto_workers_follow_the_trials_cpus(
    datasets: dict[str, Any], setting: int | str, kind: str, cpus: int, expected: int
) -> None:
    assert resolve_num_workers(setting, datasets[kind], cpus) == expected


def test_auto_without_cpus_uses_this_process_cpus(datasets: dict[str, Any]) -> None:
    mine = len(os.sched_getaffinity(0))
    assert resolve_num_workers("auto", datasets["folder"]) == min(max(mine - 1, 0), MAX_AUTO_WORKERS)


def test_loaders_get_the_resolved_workers(datasets: dict[str, Any]) -> None:
    config = TrainConfig(batch_size=4)
    train, val = make_loaders(
        datasets["folder"], datasets["folder"], config, torch.Generator(), pin_memory=False, cpus=3
    )
    assert train.loader.num_workers == 2 and val.loader.num_workers == 2
    n = len(datasets["folder"])
    assert sum(len(y) for _, y in train) == n > 4  # the workers really load every image


def _save(path: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model("resnet18", 3, dropout=0.0, weights=None)
    save_model(path, model, TrainConfig(), num_classes=3, class_names=list("abc"), metrics={})
    return model.state_dict()


def test_weights_are_read_once_while_the_file_is_unchanged(tmp_path: Path) -> None:
    clear_weights_cache()
    path = tmp_path / "m.pt"
    first = _save(path, 0)
    a = build_model("resnet18", 5, dropout=0.0, weights=str(path))
    b = build_model("resnet18", 2, dropout=0.0, weights=str(path))
    assert _read_weights.cache_info().hits == 1 and _read_weights.cache_info().misses == 1
    assert torch.equal(a.state_dict()["conv1.weight"], first["conv1.weight"])
    # training a model built from the cache must not change what the next model gets
    with torch.no_grad():
        a.conv1.weight.add_(1.0)
    c = build_model("resnet18", 2, dropout=0.0, weights=str(path))
    assert torch.equal(c.state_dict()["conv1.weight"], first["conv1.weight"])
    assert torch.equal(b.state_dict()["conv1.weight"], first["conv1.weight"])
    # a rewritten file is read again
    time.sleep(0.01)
    second = _save(path, 1)
    d = build_model("resnet18", 2, dropout=0.0, weights=str(path))
    assert not torch.equal(second["conv1.weight"], first["conv1.weight"])
    assert torch.equal(d.state_dict()["conv1.weight"], second["conv1.weight"])


def test_fit_records_where_its_time_went(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    reports: list[int] = []

    def reporter(epoch: int, metrics: Any) -> str:
        reports.append(epoch)
        time.sleep(0.05)  # a slow coordinator shows up as report time
        return "continue"

    before = time.time()
    t = fit(tiny_config(epochs=2), reporter, tmp_path, log=lambda line: None).timings
    for key in ("dataset_s", "model_s", "train_s", "eval_s", "train_data_s", "eval_data_s", "checkpoint_s"):
        assert t[key] >= 0.0, key
    assert t["report_s"] >= 0.1 and reports == [1, 2]
    assert 0 < t["train_data_s"] < t["train_s"] and 0 < t["eval_data_s"] < t["eval_s"]
    assert t["checkpoint_s"] > 0
    assert before < t["first_batch_at"] < t["first_step_at"] < time.time()
    parts = ("dataset_s", "model_s", "train_s", "eval_s", "checkpoint_s", "report_s")
    assert sum(t[k] for k in parts) <= t["total_s"]
    assert not math.isnan(t["setup_s"])
