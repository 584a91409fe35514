"""Preflight: the cheap checks catch what training would fail on, with the same errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trials.config import DatasetConfig, TrainConfig
from trials.errors import DataError, ModelError
from trials.preflight import check


def config(**changes: object) -> TrainConfig:
    return TrainConfig(weights=None).replace(**changes)


def test_a_good_config_passes(tmp_path: Path, png_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    png_tree(tmp_path / "pets" / "train", {"cat": 2, "dog": 2})
    png_tree(tmp_path / "pets" / "val", {"cat": 1, "dog": 1})
    (tmp_path / "w.pt").write_bytes(b"not read by preflight")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torchvision weights: cached (offline-safe)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth").write_bytes(b"not read by preflight")
    check(config())
    check(config(weights="IMAGENET1K_V1", model="resnet50"))
    check(config(weights=str(tmp_path / "w.pt")))
    check(config(dataset={"type": "imagefolder", "path": str(tmp_path / "pets"), "classes": ["dog", "cat"]}))
    check(config(dataset={"type": "digits", "classes": [5, 6, 7, 8, 9]}))
    check(config(dataset={"type": "torchvision", "name": "CIFAR10", "download": True}))


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"model": "vgg99"}, ModelError, "unknown model 'vgg99'"),
        ({"weights": "IMAGENET1K_V9"}, ModelError, "unknown weights 'IMAGENET1K_V9' for resnet18"),
        ({"weights": "/nonexistent/w.pt"}, ModelError, "file not found: /nonexistent/w.pt"),
        ({"dataset": {"type": "digits", "classes": [5, 10]}}, DataError, "unknown class 10"),
        ({"dataset": {"type": "imagefolder", "path": "/nonexistent/d"}}, DataError, "/nonexistent/d does not"),
        ({"dataset": {"type": "torchvision", "name": "ImageNet22k"}}, DataError, "unknown torchvision dataset"),
        (
            {"dataset": {"type": "torchvision", "name": "CIFAR10", "path": "/nonexistent/tv"}},
            DataError,
            "/nonexistent/tv does not exist; .*download: true",
        ),
    ],
)
def test_bad_configs_fail_with_one_line(changes: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        check(config(**changes))
    assert "\n" not in str(info.value)


def test_image_folder_problems(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    root = tmp_path / "pets"
    png_tree(root, {"cat": 2})
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("not an image")
    folder = config(dataset=DatasetConfig(type="imagefolder", path=str(root)).__dict__)
    with pytest.raises(DataError, match="dog holds no images"):
        check(folder)
    png_tree(root, {"cat": 1, "dog": 1})
    check(folder)
    png_tree(root / "train", {"cat": 1, "dog": 1})
    png_tree(root / "val", {"cat": 1})
    with pytest.raises(DataError, match=r"only in train \['dog'\]"):
        check(folder)


def test_preflight_does_not_decode_images(tmp_path: Path, png_tree: Callable[..., Path]) -> None:
    """A large folder is checked by listing only: broken files are not opened and it stays fast."""
    root = tmp_path / "big"
    for c in range(50):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(200):
            (root / f"class{c:02d}" / f"{i}.jpg").write_bytes(b"")  # unreadable if it were decoded
    check(config(dataset={"type": "imagefolder", "path": str(root)}))  # 10,000 empty files: none was decoded
