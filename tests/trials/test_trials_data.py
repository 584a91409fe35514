"""Datasets from real files: PNG folders written here, scikit-learn's digits, torchvision offline."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trials.augment import IMAGENET_MEAN, IMAGENET_STD
from trials.config import DatasetConfig
from trials.data import ImageSubset, clear_cache, load_data, load_test, stratified_subset
from trials.errors import DataError

COUNTS = {"cat": 10, "dog": 7, "eel": 13}


def load(cfg: DatasetConfig, size: int = 16):
    return load_data(cfg, image_size=size, aug_strength=0.0)


def is_grey(x: torch.Tensor) -> bool:
    """Whether a normalized image has equal R, G and B (undoing the per-channel ImageNet normalization)."""
    rgb = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    return torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def label_counts(ds: object) -> dict[int, int]:
    assert isinstance(ds, ImageSubset)
    return dict(Counter(int(label) for label in ds.labels))


def test_one_folder_is_split_stratified(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), val_split=0.3, test_split=0.25)
    bundle, test = load(cfg), label_counts(load_test(cfg, image_size=16))
    assert bundle.class_names == ["cat", "dog", "eel"] and bundle.num_classes == 3
    val, train = label_counts(bundle.val), label_counts(bundle.train)
    for label, n in enumerate(COUNTS.values()):
        assert abs(test[label] - 0.25 * n) <= 1, (label, test)
        assert abs(val[label] - 0.3 * (n - test[label])) <= 1, (label, val)  # val: a share of what test left
        assert test[label] + val[label] + train[label] == n
    x, y = bundle.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)


def test_default_test_and_val_splits_are_a_fifth(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"))
    assert label_counts(load_test(cfg, image_size=16)) == {0: 2, 1: 1, 2: 3}  # round(0.2 * n) of 10, 7, 13
    assert label_counts(load(cfg).val) == {0: 2, 1: 1, 2: 2}  # round(0.2 * n) of the 8, 6, 10 left


def test_train_and_val_folders(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "ds" / "train", {"a": 6, "b": 5})
    png_tree(tmp_path / "ds" / "val", {"a": 2, "b": 3})
    png_tree(tmp_path / "ds" / "test", {"a": 1, "b": 4})
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "ds"))
    bundle = load(cfg)
    assert bundle.class_names == ["a", "b"]
    assert label_counts(bundle.train) == {0: 6, 1: 5}  # all of train/: the test/ folder is the test split
    assert label_counts(bundle.val) == {0: 2, 1: 3}
    assert label_counts(load_test(cfg, image_size=16)) == {0: 1, 1: 4}
    png_tree(tmp_path / "ds" / "test", {"zzz": 1})
    clear_cache()
    with pytest.raises(DataError, match=r"only in train \[\], only in test \['zzz'\]"):
        load(cfg)  # a test/ folder must have the classes of train/, as val/ must


def test_split_is_deterministic_by_split_seed(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), val_split=0.4, split_seed=1)
    first, again, other = load(cfg), load(cfg), load(dataclasses.replace(cfg, split_seed=2))
    assert np.array_equal(first.val.indices, again.val.indices)
    assert torch.equal(first.val[0][0], again.val[0][0])
    assert not np.array_equal(first.val.indices, other.val.indices)


def test_classes_restrict_an_image_folder(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), classes=("eel", "cat"))
    bundle, test = load(cfg), load_test(cfg, image_size=16)
    assert bundle.class_names == ["eel", "cat"]
    assert label_counts(test) == {0: 3, 1: 2}  # labels follow the order of classes: eel 0, cat 1
    assert sum(label_counts(bundle.train).values()) + sum(label_counts(bundle.val).values()) == 23 - 5


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root, make: None, "does not exist"),
        (lambda root, make: (make(root, {"a": 3}), (root / "empty").mkdir()), r"class folder .*empty holds no images"),
        (lambda root, make: make(root, {"only": 4}), r"at least 2 class folders \(<class>/<image>\), found 1: only"),
        (
            lambda root, make: (make(root / "train", {"a": 3, "b": 3}), make(root / "val", {"a": 1, "c": 1})),
            r"only in train \['b'\], only in val \['c'\]",
        ),
    ],
)
def test_folder_errors_are_one_line_and_name_the_problem(
    tmp_path: Path, png_tree: Callable[..., Path], setup: Callable, expected: str
) -> None:
    root = tmp_path / "data"
    setup(root, png_tree)
    with pytest.raises(DataError, match=expected) as info:
        load(DatasetConfig(type="imagefolder", path=str(root)))
    assert "\n" not in str(info.value)


def test_unreadable_image_is_named_when_loaded(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", {"cat": 3, "dog": 3})
    bad = tmp_path / "pets" / "dog" / "broken.png"
    bad.write_bytes(b"this is not a png")
    bundle = load(DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), val_split=0.5))
    with pytest.raises(DataError, match=f"unreadable image {re.escape(str(bad))}: cannot identify image file") as info:
        for ds in (bundle.train, bundle.val):
            for i in range(len(ds)):
                ds[i]
    assert "\n" not in str(info.value)


def test_unknown_class_lists_valid_ones(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "pets", COUNTS)
    with pytest.raises(DataError, match=r"unknown class 'cow' \(valid: cat, dog, eel\)"):
        load(DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), classes=("cat", "cow")))


def test_digits_with_five_classes() -> None:
    bundle = load(DatasetConfig(type="digits", classes=(5, 6, 7, 8, 9)), size=32)
    assert bundle.num_classes == 5 and bundle.class_names == ["5", "6", "7", "8", "9"]
    assert set(label_counts(bundle.train)) == set(label_counts(bundle.val)) == {0, 1, 2, 3, 4}
    test = load_test(DatasetConfig(type="digits", classes=(5, 6, 7, 8, 9)), image_size=32)
    total = len(bundle.train) + len(bundle.val) + len(test)
    assert 890 <= total <= 910  # about 180 images per digit
    assert abs(len(test) / total - 0.2) < 0.01
    assert abs(len(bundle.val) / (total - len(test)) - 0.2) < 0.01
    x, _ = bundle.val[0]
    assert x.shape == (3, 32, 32) and is_grey(x)  # grey digits, three channels


def test_max_samples_subsample_by_class_and_seed() -> None:
    cfg = DatasetConfig(type="digits", max_train_samples=100, max_val_samples=30, split_seed=3)
    a, b, c = load(cfg), load(cfg), load(dataclasses.replace(cfg, split_seed=4))
    assert len(a.train) == 100 and len(a.val) == 30
    assert all(9 <= n <= 11 for n in label_counts(a.train).values())
    assert np.array_equal(a.train.indices, b.train.indices)
    assert not np.array_equal(a.train.indices, c.train.indices)
    assert not set(a.train.indices) & set(a.val.indices)


@pytest.mark.parametrize("n", [1, 7, 50, 99])
def test_stratified_subset_keeps_class_proportions(n: int) -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    picked = stratified_subset(labels, n, seed=0)
    assert len(picked) == n == len(set(picked.tolist()))
    for c, share in ((0, 0.6), (1, 0.3), (2, 0.1)):
        assert abs(np.sum(labels[picked] == c) - share * n) <= 1


@pytest.mark.parametrize("download", [False, True])
def test_torchvision_offline_names_the_folder(tmp_path: Path, download: bool) -> None:
    root = tmp_path / "tv"
    with pytest.raises(DataError, match=f"CIFAR10: .*under {re.escape(str(root))} .*download: true") as info:
        load(DatasetConfig(type="torchvision", name="CIFAR10", path=str(root), download=download))
    assert "\n" not in str(info.value)


def test_unknown_torchvision_dataset_lists_some() -> None:
    with pytest.raises(DataError, match=r"unknown torchvision dataset 'CIFAR11'.*CIFAR10, CIFAR100, MNIST"):
        load(DatasetConfig(type="torchvision", name="CIFAR11"))


def test_torchvision_dataset_from_files(tmp_path: Path) -> None:
    """A torchvision dataset whose files are present loads without network: MNIST in its raw format."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 12)):  # the IDX format: magic, sizes (big-endian), bytes
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 4
        header = np.array([0, 0, 8, 3], np.uint8).tobytes() + np.array([n, 28, 28], ">i4").tobytes()
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([0, 0, 8, 1], np.uint8).tobytes() + np.array([n], ">i4").tobytes()
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    cfg = DatasetConfig(type="torchvision", name="MNIST", path=str(tmp_path))
    bundle = load(cfg, size=28)
    # MNIST's own test set (train=False) is the test split; val is carved out of its training set
    assert len(bundle.train) == 32 and len(bundle.val) == 8 and len(load_test(cfg, image_size=28)) == 12
    assert bundle.class_names[:2] == ["0 - zero", "1 - one"]
    x, y = bundle.train[1]
    assert x.shape == (3, 28, 28) and is_grey(x)  # grayscale made RGB
    assert y == int(bundle.train.indices[1]) % 4  # type: ignore[attr-defined]
    carved = DatasetConfig(type="torchvision", name="MNIST", path=str(tmp_path), val_split=0.25, test_split=0.25)
    assert (len(load(carved, size=28).train), len(load_test(carved, image_size=28))) == (20, 12)  # 10 a class: 3, 2, 5


def test_val_split_carves_val_out_of_train_folder(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    png_tree(tmp_path / "ds" / "train", {"a": 10, "b": 10})
    png_tree(tmp_path / "ds" / "val", {"a": 1, "b": 1})
    carved = load(DatasetConfig(type="imagefolder", path=str(tmp_path / "ds"), val_split=0.3))
    # no test/ folder: a fifth of train/ is the test split (2 of 10), val_split of the 8 left is val
    assert label_counts(carved.train) == {0: 6, 1: 6} and label_counts(carved.val) == {0: 2, 1: 2}
    (tmp_path / "only" / "train").mkdir(parents=True)
    png_tree(tmp_path / "only" / "train", {"a": 5, "b": 5})
    alone = load(DatasetConfig(type="imagefolder", path=str(tmp_path / "only")))  # no val folder: split
    assert label_counts(alone.val) == {0: 1, 1: 1}


def test_base_data_is_loaded_once_per_process(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    from trials.data import _load_base, clear_cache

    png_tree(tmp_path / "pets", COUNTS)
    cfg = DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"))
    load(cfg)
    hits = _load_base.cache_info().hits
    load(DatasetConfig(type="imagefolder", path=str(tmp_path / "pets"), split_seed=1))
    load(
        DatasetConfig(
            type="imagefolder", path=str(tmp_path / "pets"), classes=("cat", "dog"), max_train_samples=5, split_seed=2
        )
    )
    assert _load_base.cache_info().hits == hits + 2  # other seeds, classes and sizes reuse the listing
    (tmp_path / "pets" / "fox").mkdir()
    png_tree(tmp_path / "pets", {"fox": 3})
    assert load(cfg).num_classes == 3  # cached: the new folder is not seen ...
    clear_cache()
    assert load(cfg).num_classes == 4  # ... until the cache is cleared
