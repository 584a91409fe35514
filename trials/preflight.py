"""Cheap checks that a training config can run, for the control plane to call before creating a study.

No training, no downloads, no image decoding: folders are listed (stopping at the first image of each
class) and names looked up. It raises the same ModelError / DataError that training itself would, so
a typo fails in a second instead of on every worker after the data has loaded.
"""

from __future__ import annotations

from trials.config import TrainConfig
from trials.data import check_dataset
from trials.models import check_weights


def check(config: TrainConfig) -> None:
    """Raise ModelError or DataError if ``config`` names an unknown model, invalid weights (an unknown
    weights name for that model, or a missing file), or a dataset that cannot be found: a missing
    folder, fewer than 2 non-empty class folders, train/val class folders that differ, unknown
    ``classes``, an unknown torchvision dataset."""
    check_weights(config.model, config.weights)
    check_dataset(config.dataset)
