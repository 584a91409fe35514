"""Workloads for control-plane tests: real functions that run on Ray workers and report through the
real coordinator, with learning curves computed from the params (so pruning has something to judge)
instead of minutes of training. The real fine-tuning workload is tested end to end elsewhere."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

Reporter = Callable[[int, Mapping[str, float]], str]


def curve(config: Mapping[str, Any], epoch: int) -> float:
    """A validation accuracy that rises with epochs and peaks at lr=1e-2, dropout=0.1."""
    lr_term = (math.log10(config["lr"]) + 2.0) ** 2
    quality = max(0.05, 0.95 - 0.08 * lr_term - 0.4 * abs(config["dropout"] - 0.1))
    return quality * (1.0 - math.exp(-epoch / 1.5))


def synthetic(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """Report ``config['epochs']`` epochs of ``curve``, sleeping a little per epoch; honours prune."""
    delay = float(os.environ.get("HPO_TEST_EPOCH_SECONDS", "0.05"))
    history = []
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(delay)
        acc = curve(config, epoch)
        metrics = {"val_acc": acc, "val_loss": 1.0 - acc, "train_loss": 1.0 - acc}
        history.append(metrics)
        if reporter(epoch, metrics) == "prune":
            return {"status": "pruned", "best_metrics": max(history, key=lambda m: m["val_acc"]), "epochs_run": epoch}
    best = max(range(len(history)), key=lambda i: history[i]["val_acc"])
    return {"status": "completed", "best_metrics": history[best], "epochs_run": len(history), "best_epoch": best + 1}


def exit_when_told(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """Kill its own process (``os._exit``) after the first epoch when ``seed`` is odd; otherwise like ``synthetic``."""
    reporter(1, {"val_acc": 0.1, "val_loss": 0.9})
    if config["seed"] % 2 == 1:
        os._exit(3)
    return synthetic(config, reporter, checkpoint_dir, num_threads=num_threads)


def heavy_modules(*received: object) -> list[str]:
    """Which of the modules a trial worker must not need are imported in this process (after unpickling
    ``received``, as a trial task's arguments are)."""
    names = ("optuna", "sqlalchemy", "psycopg2", "hpo.config", "hpo.coordinator")
    return sorted(m for m in names if m in sys.modules)
