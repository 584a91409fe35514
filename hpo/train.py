"""Production training from an exported (or hand-written) training file: the same ``fit`` the sweep ran,
then one evaluation on the held-out test split the sweep never saw."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo import files
from hpo.config import TrainFile, load_train_file
from hpo.errors import ConfigError
from trials.errors import TrialsError
from trials.paths import CHECKPOINT_NAME, METRICS_NAME, MODEL_NAME


@dataclass(frozen=True)
class TrainRun:
    output: Path
    metric: str
    value: float
    tuned_value: float | None
    status: str
    epochs_run: int
    best_epoch: int
    #: ``test_acc`` and ``test_loss`` on the held-out test split; None when the config holds none out.
    test_metrics: dict[str, float] | None = None


def train_from_file(
    path: str | Path, output: str | Path, *, log: Callable[[str], None] = print, num_threads: int | None = None
) -> TrainRun:
    """Train the config in ``path``, evaluate the best epoch's weights on the test split; write ``model.pt``
    (weights + config), ``metrics.json`` (val and test metrics) and ``config.yaml``.

    A config with ``dataset.test_split: 0`` holds no test split out: its ``test_metrics`` are None."""
    from trials.checkpoint import save_model
    from trials.preflight import check, field_message
    from trials.train import evaluate_test, fit

    doc: TrainFile = load_train_file(path)
    config = doc.train
    try:
        check(config)
    except TrialsError as e:
        raise ConfigError(f"{path}: {field_message(e)}") from None
    out = Path(output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    metric = config.metric
    result = fit(config, None, out, num_threads=num_threads, log=log)  # fit logs one line per epoch
    value = float(result.best_metrics[metric])
    test = None if config.dataset.test_split == 0 else evaluate_test(result.model, config)
    save_model(
        out / MODEL_NAME,
        result.model,
        config,
        num_classes=result.num_classes,
        class_names=result.class_names,
        metrics={**result.best_metrics, **(test or {})},
    )
    tuned = doc.provenance.value if doc.provenance else None
    metrics: dict[str, Any] = {
        "metric": metric,
        "value": value,
        "tuned_value": tuned,
        "status": result.status,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_metrics": result.best_metrics,
        "test_metrics": test,
        "history": result.history,
        "provenance": doc.provenance.model_dump() if doc.provenance else None,
    }
    files.write_atomic(out / METRICS_NAME, json.dumps(metrics, indent=2, default=float) + "\n")
    files.write_atomic(out / "config.yaml", files.dumps({"version": doc.version, "train": config.to_dict()}))
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)  # the run finished: nothing to resume
    return TrainRun(out, metric, value, tuned, result.status, result.epochs_run, result.best_epoch, test)
