"""Checks that a training config can run, for the control plane to call before creating a study.

``check`` is cheap and always run: no training, no downloads, no image decoding. Folders are listed
(stopping at the first image of each class), names looked up, and torchvision weights that are not in
the torch hub cache cost one HEAD request to their URL. It raises the same ModelError / DataError that
training itself would, so a typo or a missing download fails in seconds instead of on every worker
after the data has loaded. ``train.weights`` defaults to the model's pretrained weights (``DEFAULT``), so
offline a config that does not name its weights passes only once their file is in the torch hub cache.

``find_unreadable`` is the deep check (``hpo validate --deep``): it decodes every image of an image
folder, as slow as reading the dataset once.
"""

from __future__ import annotations

from collections.abc import Iterable

from trials.config import TrainConfig
from trials.data import check_dataset, find_unreadable_images, imagefolder_images
from trials.models import check_weights


def check(config: TrainConfig) -> None:
    """Raise ModelError or DataError if ``config`` names an unknown model, invalid weights (an unknown
    weights name for that model, weights neither cached nor downloadable, or a missing file), or a
    dataset that cannot be found: a missing folder, fewer than 2 non-empty class folders, train/val
    class folders that differ, unknown ``classes``, an unknown torchvision dataset."""
    check_weights(config.model, config.weights)
    check_dataset(config.dataset)


def find_unreadable(config: TrainConfig) -> list[tuple[str, str]]:
    """``(path, reason)`` of every image of ``config``'s image folder that does not decode: the train,
    val and test folders alike (``path/<class>/*`` for a one-folder dataset), whatever ``classes`` picks.

    Every file is read and decoded once. Other dataset types (digits, torchvision) are not scanned: ``[]``.
    Raises DataError when the folder itself cannot be found.
    """
    if config.dataset.type != "imagefolder" or not config.dataset.path:
        return []
    return find_unreadable_images(imagefolder_images(config.dataset.path))


def check_models(config: TrainConfig, models: Iterable[str]) -> None:
    """``check``'s model and weights checks for each of ``models`` (a searched ``model``'s choices)."""
    for model in models:
        check_weights(model, config.weights)


def field_message(error: Exception, section: str = "train") -> str:
    """``train.model: ...`` or ``train.weights: ...`` for an error about that field, else ``train: ...`` (one line)."""
    text = str(error)
    return f"{section}.{text}" if text.startswith(("model: ", "weights: ")) else f"{section}: {text}"
