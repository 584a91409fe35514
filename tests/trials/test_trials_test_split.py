"""The held-out test split: disjoint from train and val, the same for every trial, training seed and process,
and never read by ``fit``. Real data: scikit-learn's digits and PNG folders written here."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures_files import truncate, write_images
from trials.config import DatasetConfig, TrainConfig
from trials.data import ImageSubset, clear_cache, load_data, load_test, stratified_split
from trials.errors import DataError, TrainConfigError
from trials.train import evaluate_test, fit

COUNTS = {"cat": 12, "dog": 9, "eel": 15}
REPO = Path(__file__).resolve().parents[2]


def ids(ds: Any) -> list[Any]:
    """What a split holds: file paths for an image folder, positions into the decoded digits otherwise."""
    assert isinstance(ds, ImageSubset)
    paths = getattr(ds.split.images, "paths", None)
    return [paths[int(i)] if paths is not None else int(i) for i in ds.indices]


def splits(cfg: DatasetConfig) -> dict[str, list[Any]]:
    bundle = load_data(cfg, image_size=16, aug_strength=0.0)
    return {"train": ids(bundle.train), "val": ids(bundle.val), "test": ids(load_test(cfg, image_size=16))}


def splits_in_subprocess(cfg: DatasetConfig) -> dict[str, list[Any]]:
    """The same ``splits`` computed by a fresh interpreter (its own caches, its own hash seed)."""
    code = (
        "import json, sys\n"
        "from trials.config import DatasetConfig\n"
        "from tests.trials.test_trials_test_split import splits\n"
        "print(json.dumps(splits(DatasetConfig(**json.loads(sys.argv[1])))))\n"
    )
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    return json.loads(out.stdout)


def assert_disjoint(parts: dict[str, list[Any]]) -> None:
    for name, held in parts.items():
        assert len(held) == len(set(held)) > 0, name
    assert not set(parts["test"]) & set(parts["train"])
    assert not set(parts["test"]) & set(parts["val"])
    assert not set(parts["train"]) & set(parts["val"])


def test_digits_test_split_is_disjoint_and_the_same_for_every_trial_and_seed(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    # trials of one sweep: different hyperparameters and training seeds, one dataset config
    trials = [
        tiny_config(seed=seed, lr=lr, batch_size=bs) for seed, lr, bs in ((0, 1e-3, 32), (1, 3e-2, 16), (7, 1e-4, 64))
    ]
    first = splits(trials[0].dataset)
    assert_disjoint(first)
    assert (len(first["train"]), len(first["val"]), len(first["test"])) == (96, 60, 359)  # test: a fifth of each class
    for trial in trials[1:]:
        assert splits(trial.dataset) == first  # train.seed changes the model's start and order, not the data
    assert splits_in_subprocess(trials[0].dataset) == first
    other = splits(dataclasses.replace(trials[0].dataset, split_seed=1))
    assert_disjoint(other)
    assert other["test"] != first["test"]  # split_seed, and only split_seed, picks the split


def test_digits_test_split_of_a_class_does_not_depend_on_the_other_classes() -> None:
    all_digits = set(ids(load_test(DatasetConfig(type="digits"), image_size=16)))
    fives = load_test(DatasetConfig(type="digits", classes=(5, 9)), image_size=16)
    assert set(ids(fives)) <= all_digits
    assert sorted(set(fives.labels.tolist())) == [0, 1]  # labelled as load_data labels 5 and 9
    bundle = load_data(
        DatasetConfig(type="digits", classes=(5, 9), max_train_samples=40), image_size=16, aug_strength=0
    )
    assert not set(ids(fives)) & (set(ids(bundle.train)) | set(ids(bundle.val)))


def test_imagefolder_without_test_folder_carves_a_stable_stratified_test_split(
    tmp_path: Path, png_tree: Callable[..., Path]
) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), split_seed=5)
    parts = splits(cfg)
    assert_disjoint(parts)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(
        str(p) for p in (tmp_path / "pets").rglob("*.png")
    )
    by_class = {c: sum(f"/{c}/" in p for p in parts["test"]) for c in COUNTS}
    assert by_class == {"cat": 2, "dog": 2, "eel": 3}  # round(0.2 * n)
    assert splits(DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), split_seed=5, val_split=0.5)) != parts
    assert splits(dataclasses.replace(cfg, val_split=0.5))["test"] == parts["test"]  # test is held out first
    assert splits_in_subprocess(cfg) == parts


def test_imagefolder_test_folder_is_the_test_split(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    root = tmp_path / "ds"
    png_tree(root / "train", {"a": 8, "b": 8})
    png_tree(root / "test", {"a": 3, "b": 2})
    cfg = DatasetConfig(type="imagefolder", path=str(root))
    parts = splits(cfg)
    assert_disjoint(parts)
    assert sorted(parts["test"]) == sorted(str(p) for p in (root / "test").rglob("*.png"))
    assert all("/train/" in p for p in parts["train"] + parts["val"])  # no val/ folder: val carved from train/
    assert len(parts["train"]) + len(parts["val"]) == 16
    assert splits_in_subprocess(cfg) == parts
    # an explicit test_split carves the test split out of train/ instead, as val_split does for val
    carved = splits(DatasetConfig(type="imagefolder", path=str(root), test_split=0.25))
    assert_disjoint(carved)
    assert all("/train/" in p for p in carved["test"]) and len(carved["test"]) == 4


def test_fit_never_reads_the_test_split(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    """Every test image is unreadable: training never notices, evaluating on test names the file."""
    root = tmp_path / "ds"
    png_tree(root / "train", {"a": 10, "b": 10})
    bad = [truncate(p) for i, c in enumerate("ab") for p in write_images(root / "test" / c, 2, seed=i)]
    config = TrainConfig.from_dict(
        {
            "model": "resnet18",
            "weights": None,
            "dataset": {"type": "imagefolder", "path": str(root)},
            "image_size": 16,
            "batch_size": 8,
            "epochs": 1,
            "early_stopping": {"patience": None},
            "device": "cpu",
        }
    )
    result = fit(config)
    assert result.status == "completed"
    with pytest.raises(DataError, match=r"unreadable image .*/test/a/img000\.jpg") as info:
        evaluate_test(result.model, config)
    assert str(bad[0]) in str(info.value)


def test_evaluate_test_reports_test_acc_and_loss(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=1, device="cpu", **{"dataset.classes": [0, 1]})
    metrics = evaluate_test(fit(config).model, config)
    assert set(metrics) == {"test_acc", "test_loss"}
    assert 0 <= metrics["test_acc"] <= 1 and metrics["test_loss"] > 0


def test_test_split_zero_holds_nothing_out_and_keeps_the_old_val_split() -> None:
    cfg = DatasetConfig(type="digits", test_split=0)
    with pytest.raises(DataError, match=r"dataset.test_split: 0 holds no test split out"):
        load_test(cfg, image_size=16)
    bundle = load_data(cfg, image_size=16, aug_strength=0.0)
    from sklearn.datasets import load_digits

    _, held = stratified_split(np.asarray(load_digits().target), 0.2, 0)
    assert ids(bundle.val) == held.tolist()  # what val was before test splits existed (seed 0)
    assert len(bundle.train) + len(bundle.val) == 1797


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"test_split": 1.0}, "dataset.test_split", "must be at least 0 and below 1"),
        ({"test_split": -0.1}, "dataset.test_split", "must be at least 0 and below 1"),
        ({"test_split": float("nan")}, "dataset.test_split", "must be at least 0 and below 1"),
        ({"split_seed": 1.5}, "dataset.split_seed", "must be an integer"),
        ({"split_seed": True}, "dataset.split_seed", "must be an integer"),
    ],
)
def test_bad_split_settings_name_the_field(changes: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message) as info:
        TrainConfig.from_dict({"dataset": {"type": "digits", **changes}})
    assert info.value.field == field


def test_split_settings_default_and_round_trip() -> None:
    cfg = TrainConfig()
    assert (cfg.dataset.test_split, cfg.dataset.split_seed) == (None, 0)
    again = TrainConfig.from_dict(cfg.replace(**{"dataset.test_split": 0.1, "dataset.split_seed": 3}).to_dict())
    assert (again.dataset.test_split, again.dataset.split_seed) == (0.1, 3)
    clear_cache()
