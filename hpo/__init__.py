"""hpo: hyperparameter search for fine-tuning image models.

Optuna studies stored in PostgreSQL (or a SQLite file), trials dispatched by Ray, Optuna's median
pruning and early stopping inside each trial. The library API mirrors the CLI::

    from hpo import load_sweep_config, run_sweep, export_best, train_from_file, verify_file

Importing ``hpo`` is cheap: the heavy modules load when first used, and Ray workers import only
``hpo.cluster.worker``, ``hpo.coordinator.actor`` and ``trials``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_sweep_config": "hpo.config",
    "load_train_file": "hpo.config",
    "SweepConfig": "hpo.config",
    "run_sweep": "hpo.sweep",
    "SweepResult": "hpo.sweep",
    "export_best": "hpo.views.export",
    "train_from_file": "hpo.train",
    "verify_file": "hpo.verify",
    "VerifySettings": "hpo.verify",
    "HpoError": "hpo.errors",
    "ConfigError": "hpo.errors",
    "SweepError": "hpo.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
