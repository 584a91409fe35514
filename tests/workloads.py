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
    names = ("optuna", "sqlalchemy", "psycopg2", "hpo.config", "hpo.coordinator.coordinator")
    return sorted(m for m in names if m in sys.modules)


def _number(checkpoint_dir: str) -> int:
    """The trial's number, from its checkpoint folder (``.../trial-00003``)."""
    return int(checkpoint_dir.rstrip("/").rsplit("-", 1)[1])


def first_slow_rest_fail(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """Trial 0 trains slowly (4 epochs of 1 s) and completes; every other trial raises at once."""
    if _number(checkpoint_dir) != 0:
        raise RuntimeError("this trial's hyperparameters diverge")
    os.environ["HPO_TEST_EPOCH_SECONDS"] = "1.0"
    return synthetic({**config, "epochs": 4}, reporter, checkpoint_dir, num_threads=num_threads)


def unreadable_data(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """Fails as a trial does on a corrupt image: not the hyperparameters' fault."""
    from trials.errors import DataError

    time.sleep(0.2)
    raise DataError("unreadable image /data/train/cat/broken.jpg: image file is truncated")


def steal_lease(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """As another sweep taking the study over: trial 0 writes a foreign lease into the study (the storage
    URL and study name from ``steal.txt`` beside the trials' folders), then every trial trains slowly."""
    if _number(checkpoint_dir) == 0:
        import optuna

        with open(os.path.join(os.path.dirname(checkpoint_dir.rstrip("/")), "steal.txt")) as f:
            url, name = f.read().split()
        storage = optuna.storages.RDBStorage(url)
        study_id = storage.get_study_id_from_name(name)
        lease = {"owner": "another", "host": "elsewhere", "pid": 1, "pid_start": None, "heartbeat": time.time()}
        storage.set_study_system_attr(study_id, "hpo:driver", lease)
        storage.engine.dispose()
    os.environ["HPO_TEST_EPOCH_SECONDS"] = "1.0"
    return synthetic({**config, "epochs": 30}, reporter, checkpoint_dir, num_threads=num_threads)


def out_of_gpu_memory(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """Runs out of GPU memory, as a large batch of a large model does: the exception torch raises then
    (raised here on the CPU), while a big tensor is alive in this frame. Trials with batch_size 16 fit."""
    import torch

    if config["batch_size"] == 16:
        return synthetic(config, reporter, checkpoint_dir, num_threads=num_threads)
    activations = torch.zeros(8_000_000)  # noqa: F841 - what an OOM leaves referenced by the traceback's frames
    reporter(1, {"val_acc": 0.1, "val_loss": 0.9})
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def synthetic_costs(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """``synthetic``, plus the costs a multi-objective study weighs against accuracy: a latency that grows
    with the batch size, and a parameter count that grows with dropout (a stand-in for model size)."""
    out = synthetic(config, reporter, checkpoint_dir, num_threads=num_threads)
    if out["status"] != "pruned":
        out["best_metrics"] = {
            **out["best_metrics"],
            "latency_ms": 0.1 * config["batch_size"],
            "params_m": 10.0 + 20.0 * config["dropout"],
        }
    return out


def checkpointing(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """``synthetic`` that saves a checkpoint (the epoch reached, in the trial's ``checkpoint.pt``) after every
    epoch and resumes from one when its folder holds it (a retry's, copied there by the worker): the summary's
    ``resumed_from_epoch`` says from where. Epochs take ``HPO_TEST_EPOCH_SECONDS`` (default 0.05 s) each."""
    import json

    from trials.paths import CHECKPOINT_NAME, write_atomic

    path = os.path.join(checkpoint_dir, CHECKPOINT_NAME)
    start = 0
    if os.path.isfile(path):
        with open(path) as f:
            start = int(json.load(f)["epoch"])
    delay = float(os.environ.get("HPO_TEST_EPOCH_SECONDS", "0.05"))
    epochs = int(config["epochs"])
    for epoch in range(start + 1, epochs + 1):
        time.sleep(delay)
        acc = curve(config, epoch)
        metrics = {"val_acc": acc, "val_loss": 1.0 - acc, "train_loss": 1.0 - acc}
        write_atomic(path, lambda f, e=epoch: f.write(json.dumps({"epoch": e}).encode()))  # type: ignore[misc]
        if reporter(epoch, metrics) == "prune":
            return {"status": "pruned", "best_metrics": metrics, "epochs_run": epoch, "resumed_from_epoch": start}
    last = curve(config, epochs)  # the curve rises with epochs: the last is the best
    best = {"val_acc": last, "val_loss": 1.0 - last, "train_loss": 1.0 - last}
    summary = {"status": "completed", "best_metrics": best, "epochs_run": epochs, "best_epoch": epochs}
    return {**summary, "resumed_from_epoch": start}
