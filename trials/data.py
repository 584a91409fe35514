"""Datasets: scikit-learn digits, an image folder, or a torchvision dataset, as train, val and test datasets.

Loading is in two layers. The base data (the digits decoded, the folder listed, the torchvision
dataset opened) is cached per process, so a warm worker that runs many trials reads it once. On top,
each call picks classes, splits and subsamples (cheap, deterministic by ``split_seed``) and wraps the samples
in ``ImageSubset``, which applies the transform per sample.

Three disjoint splits, all decided by ``dataset.split_seed`` (never by ``train.seed``), so they are the
same for every trial, every training seed and every process:

- test (``load_test``; ``fit`` never loads it, trials select on val only): the dataset's own test set
  (``path/test/<class>/*``, a torchvision dataset's test split) unless ``test_split`` is set; then, and
  whenever there is no such set, ``test_split`` (default 0.2) of every class is held out of the training
  data first, stratified by class, before classes are picked (so a class's test images do not depend on
  which other classes a config trains on). ``test_split: 0`` holds nothing out.
- val: the dataset's own val set (``path/val``, a torchvision val split such as Flowers102's) unless
  ``val_split`` is set; then, and whenever there is no such set, ``val_split`` (default 0.2) of what the
  test split left, stratified by class.
- train: the rest; ``max_train_samples`` and ``max_val_samples`` subsample train and val by class.

Unreadable images (a truncated JPEG, a text file named .png): with ``on_bad_image: error`` the first one
read raises DataError naming the file, in the main process even when a DataLoader worker decoded it
(``ImageLoader``); with ``skip`` every image is decoded once when the folder is listed and the bad ones
are dropped, with one warning. ``find_unreadable_images`` is that scan on its own.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from trials.augment import eval_transform, train_transform
from trials.config import DatasetConfig
from trials.errors import DataError, one_line

DEFAULT_VAL_SPLIT = 0.2
#: The fraction held out as the test split when a dataset has no test set of its own.
DEFAULT_TEST_SPLIT = 0.2
DEFAULT_TORCHVISION_ROOT = "~/.cache/hpo/datasets"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
DIGITS_SIZE = 32
#: Splits used as (train, val, test) by torchvision datasets that take ``split=`` instead of ``train=``;
#: val None: carved out of train. Others that take ``split=`` use ``_DEFAULT_TORCHVISION_SPLITS``.
TORCHVISION_SPLITS: dict[str, tuple[str, str | None, str]] = {
    "SVHN": ("train", None, "test"),
    "STL10": ("train", None, "test"),
    "Food101": ("train", None, "test"),
    "Flowers102": ("train", "val", "test"),
    "DTD": ("train", "val", "test"),
    "OxfordIIITPet": ("trainval", None, "test"),
    "GTSRB": ("train", None, "test"),
    "FGVCAircraft": ("trainval", None, "test"),
    "Country211": ("train", "valid", "test"),
    "StanfordCars": ("train", None, "test"),
    "RenderedSST2": ("train", "val", "test"),
    "PCAM": ("train", "val", "test"),
}
_DEFAULT_TORCHVISION_SPLITS: tuple[str, str | None, str] = ("train", None, "test")
_TORCHVISION_EXAMPLES = "CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, SVHN, STL10, Flowers102, Food101"
_SEED_SPLIT, _SEED_TRAIN_SUBSET, _SEED_VAL_SUBSET, _SEED_TEST = 1, 2, 3, 4  # independent streams per seed
#: What PIL raises for a file that is not an image or does not decode: OSError (truncated data,
#: UnidentifiedImageError), and ValueError, SyntaxError, EOFError or struct.error from some format plugins.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
_SHOWN_BAD = 3  # unreadable images named in the skip warning
#: ``num_workers: auto`` never starts more DataLoader worker processes than this.
MAX_AUTO_WORKERS = 8

_log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """Train and val datasets (yielding ``(float CHW tensor, int label)``) and the class names.

    No test set: ``load_test`` builds it, for ``hpo train`` and ``hpo verify`` only."""

    train: Dataset[tuple[torch.Tensor, int]]
    val: Dataset[tuple[torch.Tensor, int]]
    class_names: list[str]
    num_classes: int
    #: ``(path, reason)`` of the images dropped by ``on_bad_image: skip`` (train, val and test folders).
    skipped: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------- base data (cached, untransformed)


@dataclass(frozen=True)
class _Split:
    """Untransformed samples: ``images(i)`` loads image ``i`` (uint8 CHW tensor or RGB PIL), ``labels[i]``."""

    images: Callable[[int], Any]
    labels: np.ndarray


@dataclass(frozen=True)
class _Base:
    train: _Split
    val: _Split | None  # None: carve val out of train
    test: _Split | None  # None: carve test out of train (or hold none out: test_split 0)
    class_names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


class _TensorImages:
    """Images held in one uint8 tensor (N, 3, H, W)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __call__(self, i: int) -> torch.Tensor:
        return self.images[i]


class _FileImages:
    """Images decoded from files when a sample is read (a folder may not fit in memory)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            return _decode(path)
        except _DECODE_ERRORS as e:
            raise DataError(f"unreadable image {path}: {one_line(e)}") from e


def _decode(path: str) -> Image.Image:
    # A full decode: Image.verify() passes a JPEG cut in half, only reading the pixels finds it.
    with Image.open(path) as im:
        return im.convert("RGB")


def _unreadable_reason(path: str) -> str | None:
    try:
        _decode(path)
    except _DECODE_ERRORS as e:
        return one_line(e)
    return None


def find_unreadable_images(paths: Sequence[str], *, threads: int | None = None) -> list[tuple[str, str]]:
    """``(path, reason)`` of each of ``paths`` that does not decode as an RGB image, in order.

    Every file is read and decoded once, as training would (a full read of the data); ``threads``
    (default: the CPU count, at most 8) decode in parallel, since PIL releases the GIL while decoding.
    """
    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hpo-decode") as pool:
        reasons = list(pool.map(_unreadable_reason, paths, chunksize=16))
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


class _TorchvisionImages:
    """Images of an opened torchvision dataset, converted to 3-channel RGB."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> Any:
        image = self.dataset[i][0]
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 1:
            return image.expand(3, -1, -1)
        return image


@functools.lru_cache(maxsize=4)
def _load_base(
    kind: str,
    path: str | None,
    name: str | None,
    download: bool,
    own_val: bool,
    own_test: bool = True,
    skip_bad: bool = False,
) -> _Base:
    # Keyed only by what decides the base data, so trials that differ in seed, classes or sample
    # counts share it (and a folder scanned for unreadable images is scanned once per process).
    # Errors are not cached: a fixed folder is picked up by the next call.
    if kind == "digits":
        return _digits()
    if kind == "imagefolder":
        return _imagefolder(Path(_required(path, "path")), own_val, own_test, skip_bad)
    root = Path(path or DEFAULT_TORCHVISION_ROOT).expanduser()
    return _torchvision(_required(name, "name"), root, download, own_val, own_test)


def _required(value: str | None, field: str) -> str:
    # DatasetConfig already demands these; this keeps the message right for a hand-made config.
    if not value:
        raise DataError(f"dataset.{field} is required for this dataset type")
    return value


def clear_cache() -> None:
    """Forget the per-process base data (after files on disk changed, or to free memory)."""
    _load_base.cache_clear()


def _digits() -> _Base:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().mul_(255.0 / 16.0)[:, None]  # 0..16 -> 0..255
    x = torch.nn.functional.interpolate(x, size=DIGITS_SIZE, mode="bilinear", align_corners=False)
    images = x.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = np.asarray(digits.target, dtype=np.int64)
    return _Base(_Split(_TensorImages(images), labels), None, None, tuple(str(i) for i in range(10)))


# ---------------------------------------------------------------- image folders


def imagefolder_roots(
    path: str | Path, *, own_val: bool = True, own_test: bool = True
) -> tuple[Path, Path | None, Path | None]:
    """``(train_root, val_root, test_root)`` of an image folder: ``path/train``, with ``path/val`` and
    ``path/test`` where they exist (None when absent, or when ``own_val`` / ``own_test`` is False), else
    ``path`` itself with neither (a folder ``path/test`` there is a class called test)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.path: {root} does not exist or is not a directory")
    train = root / "train"
    if train.is_dir():
        val, test = root / "val", root / "test"
        return train, (val if own_val and val.is_dir() else None), (test if own_test and test.is_dir() else None)
    return root, None, None


def class_dirs(root: Path, minimum: int = 2) -> list[str]:
    """Sorted class folder names under ``root`` (hidden folders ignored); fewer than ``minimum`` is a
    DataError (a val folder is compared with the train folder instead, which says more)."""
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(names) < minimum:
        raise DataError(
            f"dataset.path: {root} needs at least 2 class folders (<class>/<image>), "
            f"found {len(names)}{': ' + names[0] if names else ''}"
        )
    return names


def _images_in(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return found


def has_image(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (stops at the first one found)."""
    for _, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(_is_image(f) for f in filenames):
            return True
    return False


def _is_image(filename: str) -> bool:
    return not filename.startswith(".") and os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS


def _empty_class_error(folder: Path) -> DataError:
    return DataError(f"dataset.path: class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")


def check_class_match(
    train_root: Path, train_names: list[str], other_root: Path, other_names: list[str], other: str = "val"
) -> None:
    """Raise DataError unless the train folder and the ``other`` (val or test) folder have the same class
    folders."""
    if train_names != other_names:
        only_train = sorted(set(train_names) - set(other_names))
        only_other = sorted(set(other_names) - set(train_names))
        raise DataError(
            f"dataset.path: class folders differ between {train_root} and {other_root}: "
            f"only in train {only_train}, only in {other} {only_other}"
        )


def imagefolder_images(path: str | Path) -> list[str]:
    """Every image file of an image folder, as training and ``hpo validate --deep`` see them: those in the
    class folders of ``path/train``, ``path/val`` and ``path/test`` when ``path/train`` exists, else of
    ``path``."""
    root = Path(path).expanduser()
    train_root, _, _ = imagefolder_roots(root)
    roots = [root / s for s in ("train", "val", "test") if (root / s).is_dir()] if train_root != root else [root]
    return [f for r in roots for name in class_dirs(r, minimum=0) for f in _images_in(r / name)]


def _list_folder(root: Path, names: list[str], skip_bad: bool) -> tuple[_Split, list[tuple[str, str]]]:
    files = [_images_in(root / name) for name in names]
    for name, found in zip(names, files, strict=True):
        if not found:
            raise _empty_class_error(root / name)
    bad = find_unreadable_images([f for found in files for f in found]) if skip_bad else []
    if bad:
        dropped = {p for p, _ in bad}
        for name, found in zip(names, files, strict=True):
            if all(f in dropped for f in found):
                raise DataError(
                    f"dataset.path: every image in class folder {root / name} is unreadable ({len(found)}), "
                    f"e.g. {found[0]}"
                )
        files = [[f for f in found if f not in dropped] for found in files]
    paths = [f for found in files for f in found]
    labels = [label for label, found in enumerate(files) for _ in found]
    return _Split(_FileImages(paths), np.asarray(labels, dtype=np.int64)), bad


def _imagefolder(path: Path, own_val: bool, own_test: bool, skip_bad: bool) -> _Base:
    train_root, val_root, test_root = imagefolder_roots(path, own_val=own_val, own_test=own_test)
    names = class_dirs(train_root)
    held: dict[str, _Split | None] = {"val": None, "test": None}
    held_bad: list[tuple[str, str]] = []
    for part, root in (("val", val_root), ("test", test_root)):
        if root is not None:
            check_class_match(train_root, names, root, class_dirs(root, minimum=0), part)
            held[part], bad = _list_folder(root, names, skip_bad)
            held_bad += bad
    val, test = held["val"], held["test"]
    train, train_bad = _list_folder(train_root, names, skip_bad)
    skipped = train_bad + held_bad
    if skipped:
        total = len(train.labels) + sum(len(s.labels) for s in (val, test) if s is not None) + len(skipped)
        _log.warning(
            "dataset %s: skipped %d unreadable image(s) of %d (on_bad_image: skip): %s",
            path,
            len(skipped),
            total,
            _few_bad(skipped),
        )
    return _Base(train, val, test, tuple(names), tuple(skipped))


def _few_bad(bad: Sequence[tuple[str, str]], n: int = _SHOWN_BAD) -> str:
    shown = "; ".join(f"{p} ({r})" for p, r in bad[:n])
    return shown + (f"; ... and {len(bad) - n} more" if len(bad) > n else "")


# ---------------------------------------------------------------- torchvision datasets


def torchvision_class(name: str) -> type:
    """The ``torchvision.datasets`` class called ``name``; anything else is a DataError."""
    import torchvision

    klass = getattr(torchvision.datasets, name, None)
    if not (
        isinstance(klass, type)
        and issubclass(klass, torchvision.datasets.VisionDataset)
        and klass is not torchvision.datasets.VisionDataset
    ):
        raise DataError(
            f"dataset.name: unknown torchvision dataset {name!r} "
            f"(for example: {_TORCHVISION_EXAMPLES}; see torchvision.datasets)"
        )
    return klass


def torchvision_parts(klass: type, name: str) -> tuple[bool, bool]:
    """``(has_val, has_test)``: whether torchvision dataset ``klass`` (called ``name``) has a val split and a
    test split of its own. Datasets taking ``train=`` have a test split (``train=False``) and no val."""
    params = inspect.signature(klass).parameters
    if "train" in params:
        return False, True
    if "split" in params:
        return TORCHVISION_SPLITS.get(name, _DEFAULT_TORCHVISION_SPLITS)[1] is not None, True
    return False, False


def _open_torchvision(klass: type, name: str, root: Path, download: bool, part: str) -> Any:
    params = inspect.signature(klass).parameters
    if "train" in params:
        kwargs: dict[str, Any] = {"train": part == "train"}
    elif "split" in params:
        splits = TORCHVISION_SPLITS.get(name, _DEFAULT_TORCHVISION_SPLITS)
        kwargs = {"split": splits[("train", "val", "test").index(part)]}
    else:
        kwargs = {}
    if "download" in params:
        kwargs["download"] = download
    try:
        return klass(str(root), **kwargs)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; "Dataset not found" a RuntimeError
        hint = "download failed (no network?); place its files" if download else "not found; place its files"
        raise DataError(
            f"dataset {name}: {hint} under {root} or set dataset.download: true on a machine "
            f"with network ({one_line(e)})"
        ) from e
    except TypeError as e:
        raise DataError(
            f"dataset {name}: cannot open it with root={root} and {kwargs} ({one_line(e)}); "
            f"use type imagefolder instead"
        ) from e


def _targets(dataset: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        value = getattr(dataset, attr, None)
        if value is not None and len(value) == len(dataset):
            return np.asarray(value, dtype=np.int64)
    return np.asarray([dataset[i][1] for i in range(len(dataset))], dtype=np.int64)  # decodes: slow fallback


def _torchvision(name: str, root: Path, download: bool, own_val: bool, own_test: bool) -> _Base:
    klass = torchvision_class(name)
    train = _open_torchvision(klass, name, root, download, "train")
    has_val, has_test = torchvision_parts(klass, name)
    val = _open_torchvision(klass, name, root, download, "val") if own_val and has_val else None
    test = _open_torchvision(klass, name, root, download, "test") if own_test and has_test else None
    labels = _targets(train)
    classes = getattr(train, "classes", None)
    n = int(labels.max()) + 1 if len(labels) else 0
    if classes is None or len(classes) < n:
        classes = range(n)
    names = [str(c) for c in classes]
    return _Base(
        _Split(_TorchvisionImages(train), labels),
        None if val is None else _Split(_TorchvisionImages(val), _targets(val)),
        None if test is None else _Split(_TorchvisionImages(test), _targets(test)),
        tuple(names),
    )


# ---------------------------------------------------------------- selection, split, subsample


def select_classes(class_names: Sequence[str], classes: Sequence[int | str] | None) -> list[int]:
    """Indices into ``class_names`` of the wanted ``classes`` (in the order given; all when None).

    A class is matched by name (``5`` matches the digit class ``"5"``), else an integer is taken as an
    index (CIFAR10's ``3`` is ``"cat"``).
    """
    if classes is None:
        return list(range(len(class_names)))
    by_name = {n: i for i, n in enumerate(class_names)}
    picked = []
    for c in classes:
        if str(c) in by_name:
            picked.append(by_name[str(c)])
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(class_names):
            picked.append(c)
        else:
            shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            raise DataError(f"dataset.classes: unknown class {c!r} (valid: {shown})")
    if len(set(picked)) != len(picked):
        raise DataError(f"dataset.classes: {list(classes)} names the same class twice")
    return picked


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, stream])  # SeedSequence refuses negative seeds


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, stream: int = _SEED_SPLIT
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(keep, held_out)`` into ``labels``: each class holds out fraction * n (rounded) of its n
    samples (at least 1 when it has 2 or more, always leaving 1), chosen at random by ``seed``."""
    rng = _rng(seed, stream)
    keep, held = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        k = min(max(math.floor(fraction * n + 0.5), 1), n - 1) if n >= 2 else 0  # half rounds up
        held.append(members[:k])
        keep.append(members[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def stratified_subset(labels: np.ndarray, n: int, seed: int, stream: int = _SEED_TRAIN_SUBSET) -> np.ndarray:
    """Positions of ``n`` samples of ``labels`` (all if fewer), each class represented in proportion.

    Every sample gets the key (rank within its class + 0.5) / class size, ranks shuffled by ``seed``;
    the ``n`` smallest keys take about the same fraction of every class.
    """
    if n >= len(labels):
        return np.arange(len(labels))
    rng = _rng(seed, stream)
    keys = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keys[members] = (rng.permutation(len(members)) + 0.5) / len(members)
    return np.sort(np.argsort(keys, kind="stable")[:n])


class ImageSubset(Dataset[tuple[torch.Tensor, int]]):
    """Samples ``indices`` of a base split with ``labels`` (0..k-1), each transformed when read."""

    def __init__(
        self, split: _Split, indices: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.split = split
        self.indices = indices
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.images(int(self.indices[i]))), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]] | Unreadable:
        """A batch of samples, for a DataLoader. In a DataLoader worker an unreadable image comes back as
        ``Unreadable`` instead of raising (see ``ImageLoader``)."""
        try:
            return [self[i] for i in indices]
        except DataError as e:
            if get_worker_info() is None:
                raise
            return Unreadable(str(e))


@dataclass(frozen=True)
class Unreadable:
    """A batch that failed to load in a DataLoader worker, carried to the main process as data.

    torch re-raises a worker's exception with the worker's whole traceback as its message, so its first
    line would say "Caught DataError in DataLoader worker process 0" rather than which file; ``ImageLoader``
    raises DataError with this ``message`` (the worker's own one-line message) instead.
    """

    message: str


def _collate(batch: Any) -> Any:
    return batch if isinstance(batch, Unreadable) else default_collate(batch)


class ImageLoader:
    """A ``DataLoader`` over an ``ImageSubset`` (keyword arguments as DataLoader's) that raises an unreadable
    image's DataError, naming the file in one line, whether it was decoded in a worker or not."""

    def __init__(self, dataset: Dataset[Any], **kwargs: Any) -> None:
        self.loader: DataLoader[Any] = DataLoader(dataset, collate_fn=_collate, **kwargs)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if isinstance(batch, Unreadable):
                raise DataError(batch.message)
            yield batch


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def in_memory(dataset: Dataset[Any]) -> bool:
    """Whether ``dataset``'s images are already decoded tensors in memory (digits): nothing to decode."""
    return isinstance(dataset, ImageSubset) and isinstance(dataset.split.images, _TensorImages)


def resolve_num_workers(setting: int | str, dataset: Dataset[Any], cpus: int | None = None) -> int:
    """DataLoader worker processes for ``train.num_workers``: a number as it is; ``auto``: none when the trial
    has one CPU (a worker would take it from the training step) or the images are tensors in memory already
    (nothing to decode; workers would only copy them), else one per CPU of the trial but the one the training
    loop runs on, at most ``MAX_AUTO_WORKERS``. ``cpus``: the trial's CPUs (Ray's for a sweep trial), by
    default those of this process. Decoded-JPEG folders at 224 px need them to keep a GPU busy."""
    if setting != "auto":
        return int(setting)
    n = available_cpus() if cpus is None else int(cpus)
    if n <= 1 or in_memory(dataset):
        return 0
    return min(n - 1, MAX_AUTO_WORKERS)


@dataclass(frozen=True)
class _Selection:
    """Which samples each split holds: positions into ``base.train``, ``val_from`` and ``test_from``, and
    ``remap`` from base class indices to the picked classes' labels (-1: not picked)."""

    picked: list[int]
    remap: np.ndarray
    train: np.ndarray
    val_from: _Split
    val: np.ndarray
    test_from: _Split | None  # None: no test split (test_split 0)
    test: np.ndarray


def _base_for(cfg: DatasetConfig) -> _Base:
    path = str(Path(cfg.path).expanduser().resolve()) if cfg.path else None
    skip_bad = cfg.type == "imagefolder" and cfg.on_bad_image == "skip"
    return _load_base(cfg.type, path, cfg.name, cfg.download, cfg.val_split is None, cfg.test_split is None, skip_bad)


def _select(cfg: DatasetConfig, base: _Base) -> _Selection:
    """Split and subsample ``base`` as ``cfg`` says, by ``cfg.split_seed`` alone (see the module docstring)."""
    picked = select_classes(base.class_names, cfg.classes)
    remap = np.full(len(base.class_names), -1, dtype=np.int64)
    remap[picked] = np.arange(len(picked))
    seed = cfg.split_seed

    def wanted(split: _Split, positions: np.ndarray) -> np.ndarray:
        return positions[remap[split.labels[positions]] >= 0]

    pool = np.arange(len(base.train.labels))
    test_from, test_idx = base.test, np.arange(len(base.test.labels) if base.test is not None else 0)
    fraction = DEFAULT_TEST_SPLIT if cfg.test_split is None else cfg.test_split
    if base.test is None and fraction > 0:
        # Held out of every class before classes are picked: a class's test images are the same whichever
        # other classes a config trains on.
        pool, test_idx = stratified_split(base.train.labels, fraction, seed, _SEED_TEST)
        test_from = base.train
    if test_from is not None:
        test_idx = wanted(test_from, test_idx)

    train_idx = wanted(base.train, pool)
    if base.val is None:
        fraction = cfg.val_split if cfg.val_split is not None else DEFAULT_VAL_SPLIT
        keep, held = stratified_split(base.train.labels[train_idx], fraction, seed)
        val_from, val_idx, train_idx = base.train, train_idx[held], train_idx[keep]
    else:
        val_from, val_idx = base.val, wanted(base.val, np.arange(len(base.val.labels)))
    if cfg.max_train_samples is not None:
        labels = remap[base.train.labels[train_idx]]
        train_idx = train_idx[stratified_subset(labels, cfg.max_train_samples, seed)]
    if cfg.max_val_samples is not None:
        labels = remap[val_from.labels[val_idx]]
        val_idx = val_idx[stratified_subset(labels, cfg.max_val_samples, seed, _SEED_VAL_SUBSET)]
    return _Selection(picked, remap, train_idx, val_from, val_idx, test_from, test_idx)


def load_data(cfg: DatasetConfig, *, image_size: int, aug_strength: float) -> DataBundle:
    """Train and val datasets for ``cfg``: classes picked, split and subsampled by ``cfg.split_seed``, train
    samples augmented with ``train_transform(aug_strength)``, val samples with ``eval_transform``.

    The test split is held out of both and not built here (``load_test``)."""
    base = _base_for(cfg)
    sel = _select(cfg, base)
    if len(sel.train) < 2 or len(sel.val) < 1:
        raise DataError(
            f"dataset: {len(sel.train)} training and {len(sel.val)} validation images after "
            f"selecting classes and splitting; need at least 2 and 1"
        )
    return DataBundle(
        train=ImageSubset(
            base.train, sel.train, sel.remap[base.train.labels[sel.train]], train_transform(aug_strength, image_size)
        ),
        val=ImageSubset(sel.val_from, sel.val, sel.remap[sel.val_from.labels[sel.val]], eval_transform(image_size)),
        class_names=[base.class_names[i] for i in sel.picked],
        num_classes=len(sel.picked),
        skipped=base.skipped,
    )


def load_test(cfg: DatasetConfig, *, image_size: int) -> ImageSubset:
    """The held-out test split of ``cfg`` (picked classes only, labelled as ``load_data`` labels them, with
    ``eval_transform``): the same images for every trial, training seed and process, disjoint from train
    and val. For final evaluation only (``hpo train``, ``hpo verify``); ``fit`` never calls it.

    DataError when ``test_split: 0`` holds nothing out, or no test image is left of the picked classes.
    """
    base = _base_for(cfg)
    sel = _select(cfg, base)
    if sel.test_from is None:
        raise DataError("dataset.test_split: 0 holds no test split out; set it above 0 (or add a test/ folder)")
    if len(sel.test) < 1:
        raise DataError("dataset: no test image of the picked classes (a class needs 2 images for one to be held out)")
    labels = sel.remap[sel.test_from.labels[sel.test]]
    return ImageSubset(sel.test_from, sel.test, labels, eval_transform(image_size))


def check_dataset(cfg: DatasetConfig) -> None:
    """Cheap checks (listing folders, no decoding, no download) that ``load_data`` can find the data."""
    if cfg.type == "digits":
        select_classes([str(i) for i in range(10)], cfg.classes)
    elif cfg.type == "imagefolder":
        train_root, val_root, test_root = imagefolder_roots(
            _required(cfg.path, "path"), own_val=cfg.val_split is None, own_test=cfg.test_split is None
        )
        names = class_dirs(train_root)
        roots = [train_root]
        for part, root in (("val", val_root), ("test", test_root)):
            if root is not None:
                check_class_match(train_root, names, root, class_dirs(root, minimum=0), part)
                roots.append(root)
        for root in roots:
            for name in names:
                if not has_image(root / name):
                    raise _empty_class_error(root / name)
        select_classes(names, cfg.classes)
    else:
        torchvision_class(_required(cfg.name, "name"))
        root = Path(cfg.path or DEFAULT_TORCHVISION_ROOT).expanduser()
        if not cfg.download and not root.is_dir():
            raise DataError(
                f"dataset {cfg.name}: {root} does not exist; place the dataset files there or "
                f"set dataset.download: true on a machine with network"
            )
