"""The fine-tuning workload that runs on workers: data, augmentation, model, training loop.

It takes a plain ``TrainConfig`` and a reporter callback and knows nothing of Optuna, Ray or the
database. Heavy modules (``trials.train``, ``trials.data``, ``trials.models``) import torch; this
package root does not, so the control plane can validate configs cheaply.
"""

from __future__ import annotations

from trials.config import DatasetConfig, EarlyStoppingConfig, TrainConfig
from trials.errors import DataError, ModelError, TrainConfigError, TrialsError

__all__ = [
    "DataError",
    "DatasetConfig",
    "EarlyStoppingConfig",
    "ModelError",
    "TrainConfig",
    "TrainConfigError",
    "TrialsError",
]
