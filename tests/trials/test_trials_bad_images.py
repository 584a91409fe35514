"""Unreadable images in an image folder: real PNG/JPEG files written by PIL, one JPEG cut in half.

``on_bad_image: error`` names the file when a dataset or a training run reads it (also from a DataLoader
worker); ``skip`` drops it at load time with one counted warning; ``find_unreadable`` lists exactly it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fixtures_files import truncate, write_images
from trials.config import DatasetConfig, TrainConfig
from trials.data import find_unreadable_images, load_data
from trials.errors import DataError, TrainConfigError
from trials.preflight import check, find_unreadable
from trials.train import fit


def write_jpegs(folder: Path, n: int, seed: int, size: int = 64) -> list[Path]:
    return write_images(folder, n, seed, "JPEG", size)


@pytest.fixture
def photos(tmp_path: Path, png_tree: Callable[..., Path]) -> tuple[Path, Path]:
    """``(root, bad)``: a one-folder ImageFolder (PNG cats, JPEG dogs, 6 each) whose ``dog/img002.jpg``
    is truncated."""
    root = tmp_path / "photos"
    png_tree(root, {"cat": 6})
    dogs = write_jpegs(root / "dog", 6, seed=1)
    return root, truncate(dogs[2])


def folder_config(root: Path, **dataset: Any) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": "resnet18",
            "weights": None,
            # test_split 0: every image in train or val, where training reads it
            "dataset": {"type": "imagefolder", "path": str(root), "val_split": 0.5, "test_split": 0, **dataset},
            "image_size": 32,
            "batch_size": 4,
            "epochs": 1,
            "aug_strength": 0.0,
            "early_stopping": {"patience": None},
            "device": "cpu",
        }
    )


def test_a_jpeg_cut_in_half_passes_verify_but_not_a_decode(photos: tuple[Path, Path]) -> None:
    """The fact the design rests on: ``Image.verify()`` would miss it, only a full decode finds it."""
    _, bad = photos
    with Image.open(bad) as im:
        im.verify()
    [(path, reason)] = find_unreadable_images([str(bad)])
    assert path == str(bad) and reason.startswith("image file is truncated"), reason


def test_the_dataset_names_the_unreadable_file(photos: tuple[Path, Path]) -> None:
    root, bad = photos
    bundle = load_data(folder_config(root).dataset, image_size=16, aug_strength=0.0)
    assert len(bundle.train) + len(bundle.val) == 12 and bundle.skipped == ()  # error mode: listed, not decoded
    with pytest.raises(DataError) as info:
        for ds in (bundle.train, bundle.val):
            for i in range(len(ds)):  # type: ignore[arg-type]
                ds[i]
    assert re.fullmatch(rf"unreadable image {re.escape(str(bad))}: image file is truncated.*", str(info.value))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_training_run_fails_with_the_file_named(photos: tuple[Path, Path], num_workers: int) -> None:
    """From a DataLoader worker too: one line naming the file, not torch's "Caught DataError in worker"."""
    root, bad = photos
    with pytest.raises(DataError) as info:
        fit(folder_config(root).replace(num_workers=num_workers))
    message = str(info.value)
    assert message.startswith(f"unreadable image {bad}: image file is truncated"), message
    assert "\n" not in message


def test_skip_trains_on_the_rest_and_warns_once_with_the_count(
    photos: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = photos
    config = folder_config(root, on_bad_image="skip")
    with caplog.at_level(logging.WARNING, logger="trials.data"):
        bundle = load_data(config.dataset, image_size=16, aug_strength=0.0)
        result = fit(config)
    assert bundle.skipped == ((str(bad), bundle.skipped[0][1]),)
    assert len(bundle.train) + len(bundle.val) == 11
    for ds in (bundle.train, bundle.val):  # every remaining sample decodes, labels still line up
        for i in range(len(ds)):  # type: ignore[arg-type]
            x, y = ds[i]
            assert x.shape == (3, 16, 16) and y in (0, 1)
    assert result.status == "completed" and result.epochs_run == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # the folder is scanned once per process, not per trial
    assert f"skipped 1 unreadable image(s) of 12 (on_bad_image: skip): {bad} (image file is truncated" in warnings[0]


def test_skip_keeps_labels_with_their_files(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    """Dropping files shifts positions; each kept sample must still carry its own class."""
    root = tmp_path / "ds"
    png_tree(root / "train", {"a": 4, "b": 4})
    png_tree(root / "val", {"a": 2, "b": 2})
    (root / "train" / "a" / "img001.png").write_bytes(b"not a png")
    truncate(write_jpegs(root / "val" / "b", 1, seed=3)[0])
    cfg = DatasetConfig(type="imagefolder", path=str(root), on_bad_image="skip", test_split=0)
    bundle = load_data(cfg, image_size=12, aug_strength=0.0)
    assert sorted(p for p, _ in bundle.skipped) == sorted(
        [str(root / "train" / "a" / "img001.png"), str(root / "val" / "b" / "img000.jpg")]
    )
    for ds in (bundle.train, bundle.val):
        paths = [ds.split.images.paths[int(i)] for i in ds.indices]  # type: ignore[attr-defined]
        labels = [int(y) for y in ds.labels]  # type: ignore[attr-defined]
        assert labels == [0 if "/a/" in p else 1 for p in paths]
    assert (len(bundle.train), len(bundle.val)) == (7, 4)


def test_skip_with_every_image_of_a_class_unreadable_is_an_error(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    root = tmp_path / "ds"
    png_tree(root, {"a": 3})
    for path in write_jpegs(root / "b", 2, seed=4):
        truncate(path)
    with pytest.raises(
        DataError, match=rf"every image in class folder {re.escape(str(root / 'b'))} is unreadable \(2\)"
    ):
        load_data(
            DatasetConfig(type="imagefolder", path=str(root), on_bad_image="skip"),
            image_size=12,
            aug_strength=0,
        )


def test_find_unreadable_lists_exactly_the_bad_files(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    root = tmp_path / "ds"
    png_tree(root / "train", {"a": 3, "b": 3})
    png_tree(root / "val", {"a": 1, "b": 1})
    bad_train = truncate(write_jpegs(root / "train" / "b", 2, seed=5)[1])
    bad_test = root / "test" / "a" / "empty.png"
    png_tree(root / "test", {"a": 1, "b": 1})
    bad_test.write_bytes(b"")
    (root / "train" / "a" / "notes.txt").write_text("not an image: ignored, as training ignores it")
    (root / "stray.jpg").write_bytes(b"outside the class folders: ignored")
    config = folder_config(root)
    check(config)  # the cheap check decodes nothing, so it passes
    found = find_unreadable(config)
    assert [p for p, _ in found] == [str(bad_train), str(bad_test)]
    assert found[0][1].startswith("image file is truncated")
    assert "cannot identify image file" in found[1][1]
    assert find_unreadable(config.replace(**{"dataset.on_bad_image": "skip"})) == found  # reports either way
    assert find_unreadable(TrainConfig()) == []  # digits: nothing to decode


def test_find_unreadable_on_a_clean_folder_is_empty_and_quick(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "ds", {"a": 100, "b": 100})
    assert find_unreadable(folder_config(tmp_path / "ds")) == []


@pytest.mark.parametrize("value", ["ignore", "", None, "Skip"])
def test_on_bad_image_rejects_unknown_values_naming_the_field(value: object) -> None:
    with pytest.raises(
        TrainConfigError, match=r"dataset.on_bad_image: must (be one of error, skip|not be null), got"
    ) as info:
        TrainConfig.from_dict({"dataset": {"type": "digits", "on_bad_image": value}})
    assert info.value.field == "dataset.on_bad_image"
    with pytest.raises(TrainConfigError, match="on_bad_image"):
        DatasetConfig(on_bad_image=value)  # type: ignore[arg-type]
    assert DatasetConfig().on_bad_image == "error"
