"""``fit`` end to end on real (tiny) data: pruning, early stopping, checkpoints, resuming, fine-tuning."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from trials.checkpoint import CHECKPOINT_FORMAT, save_model
from trials.config import TrainConfig
from trials.models import head_path
from trials.train import CONTINUE, PRUNE, FitResult, fit


class Interrupted(Exception):
    """Stands in for a worker that dies in the middle of a run."""


class Recorder:
    """A reporter that records what it is told and answers from a table (``CONTINUE`` by default)."""

    def __init__(self, answers: Mapping[int, str] | None = None, on: Callable[[int], None] | None = None) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.answers = dict(answers or {})
        self.on = on

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> str:
        self.calls.append((epoch, dict(metrics)))
        if self.on is not None:
            self.on(epoch)
        return self.answers.get(epoch, CONTINUE)

    @property
    def epochs(self) -> list[int]:
        return [e for e, _ in self.calls]


def states_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], keys: Any = None) -> bool:
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in (keys if keys is not None else a))


# The run everything else is compared with: augmentation, dropout and shuffling all draw random numbers,
# so an exact resume needs every random generator restored.
RESUME_CHANGES = {"epochs": 4, "aug_strength": 0.3, "dropout": 0.2}


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., TrainConfig]
) -> tuple[FitResult, Path, TrainConfig]:
    config = tiny_config(**RESUME_CHANGES)
    directory = tmp_path_factory.mktemp("full")
    return fit(config, Recorder(), directory), directory, config


def test_completed_run_reports_every_epoch(full_run: tuple[FitResult, Path, TrainConfig]) -> None:
    result = full_run[0]
    assert result.status == "completed" and result.epochs_run == 4 and result.resumed_from_epoch == 0
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for entry in result.history:
        assert set(entry) == {"epoch", "val_acc", "val_loss", "train_loss", "lr"}
        assert 0.0 <= entry["val_acc"] <= 1.0 and math.isfinite(entry["val_loss"])
    best = max(result.history, key=lambda h: h["val_acc"])
    assert result.best_epoch == best["epoch"] and result.best_metrics["val_acc"] == best["val_acc"]
    assert result.num_classes == 10 and result.class_names == [str(i) for i in range(10)]
    assert {"setup_s", "first_batch_at", "train_s"} <= set(result.timings)
    assert 0 < result.timings["setup_s"] < result.timings["total_s"]
    json.dumps(result.summary(), allow_nan=False)


def test_same_seed_same_history(full_run: tuple[FitResult, Path, TrainConfig]) -> None:
    result, _, config = full_run
    again = fit(config)  # no checkpoint directory: checkpointing must not change the numbers
    assert again.history == result.history
    assert states_equal(again.model.state_dict(), result.model.state_dict())


def test_checkpoint_loads_weights_only(full_run: tuple[FitResult, Path, TrainConfig]) -> None:
    _, directory, config = full_run
    ckpt = torch.load(directory / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 4 and ckpt["finished"] == "completed"
    assert TrainConfig.from_dict(ckpt["config"]) == config
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3, 4]
    assert ckpt["num_classes"] == 10 and len(ckpt["class_names"]) == 10
    assert {
        "model_state",
        "optimizer_state",
        "scheduler_state",
        "rng",
        "early_stopping",
        "best_epoch",
        "best_model_state",
    } <= set(ckpt)
    assert [p.name for p in directory.iterdir()] == ["checkpoint.pt"]  # no temporary files left over


def test_interrupted_run_resumes_to_the_same_result(
    full_run: tuple[FitResult, Path, TrainConfig], tmp_path: Path
) -> None:
    result, _, config = full_run

    def crash(epoch: int) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(config, Recorder(on=crash), tmp_path)
    reporter = Recorder()
    resumed = fit(config, reporter, tmp_path)
    assert resumed.resumed_from_epoch == 2
    assert reporter.epochs == [1, 2, 3, 4]  # epochs 1-2 replayed from the checkpoint, then 3-4 trained
    assert [m for _, m in reporter.calls[:2]] == [
        {k: v for k, v in h.items() if k != "epoch"} for h in result.history[:2]
    ]
    assert resumed.history == result.history
    assert resumed.status == "completed" and resumed.best_epoch == result.best_epoch
    assert states_equal(resumed.model.state_dict(), result.model.state_dict())


def test_checkpoints_wait_for_checkpoint_every_s(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    """Epochs shorter than the interval write no checkpoint: an interrupted run starts again from epoch 1."""
    config = tiny_config(epochs=3, checkpoint_every_s=3600)
    saved: list[bool] = []

    def crash(epoch: int) -> None:
        saved.append((tmp_path / "checkpoint.pt").exists())
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(config, Recorder(on=crash), tmp_path)
    assert saved == [False, False]
    result = fit(config, Recorder(), tmp_path)
    assert result.resumed_from_epoch == 0 and result.epochs_run == 3 and result.timings["checkpoint_s"] == 0.0
    assert not (tmp_path / "checkpoint.pt").exists()


def test_finished_run_is_replayed_not_retrained(full_run: tuple[FitResult, Path, TrainConfig]) -> None:
    result, directory, config = full_run
    reporter = Recorder()
    again = fit(config, reporter, directory)
    assert again.status == "completed" and again.resumed_from_epoch == 4 and again.timings["train_s"] == 0
    assert reporter.epochs == [1, 2, 3, 4] and again.history == result.history
    assert states_equal(again.model.state_dict(), result.model.state_dict())  # best weights restored


@pytest.mark.parametrize("at", [1, 2])
def test_replayed_prune_is_honoured(full_run: tuple[FitResult, Path, TrainConfig], at: int) -> None:
    result, directory, config = full_run
    reporter = Recorder({at: PRUNE})
    pruned = fit(config, reporter, directory)
    assert pruned.status == "pruned" and pruned.epochs_run == at and reporter.epochs == list(range(1, at + 1))
    kept = result.history[:at]  # the best of the epochs kept, whatever the full run's best epoch was
    best = max(kept, key=lambda h: h["val_acc"])
    assert pruned.best_epoch == best["epoch"] and pruned.best_metrics["val_acc"] == best["val_acc"]


def test_prune_stops_at_that_epoch(tiny_config: Callable[..., TrainConfig]) -> None:
    reporter = Recorder({2: PRUNE})
    threads = torch.get_num_threads()
    try:
        result = fit(tiny_config(epochs=4), reporter, num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.status == "pruned" and reporter.epochs == [1, 2]
    assert result.epochs_run == 2 and len(result.history) == 2


def test_changed_config_starts_fresh(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    fit(tiny_config(epochs=1), None, tmp_path)
    lines: list[str] = []
    result = fit(tiny_config(epochs=1, lr=1e-3), None, tmp_path, log=lines.append)
    assert result.resumed_from_epoch == 0 and len(result.history) == 1
    assert any("different config; starting fresh" in line for line in lines)


def test_patience_on_a_flat_metric_stops_and_restores_the_best_weights(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # A frozen backbone and a tiny learning rate: the head moves (its weights change) but no
    # prediction does, so val_acc is flat and only epoch 1 counts as an improvement.
    config = tiny_config(epochs=6, lr=1e-7, freeze_backbone_epochs=6, dropout=0.0, **{"early_stopping.patience": 2})
    saved: dict[int, dict[str, torch.Tensor]] = {}

    def keep_checkpoint(epoch: int) -> None:
        saved[epoch] = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model_state"]

    result = fit(config, Recorder(on=keep_checkpoint), tmp_path)
    assert len({h["val_acc"] for h in result.history}) == 1, "precondition: val_acc should be flat"
    assert result.status == "early_stopped" and result.epochs_run == 3 and result.best_epoch == 1
    head = head_path(result.model)
    head_keys = [k for k in saved[1] if k.startswith(head + ".")]
    assert not states_equal(saved[1], saved[3], head_keys), "precondition: the head should have moved"
    assert states_equal(result.model.state_dict(), saved[1])
    epoch_metrics = {k: v for k, v in result.best_metrics.items() if k not in ("params_m", "latency_ms")}
    assert epoch_metrics == {k: v for k, v in result.history[0].items() if k != "epoch"}


def test_frozen_backbone_keeps_pretrained_weights_then_trains(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    from trials.models import build_model

    source = build_model("resnet18", 10, dropout=0.0, weights=None)
    save_model(tmp_path / "init.pt", source, tiny_config(), num_classes=10, class_names=list("0123456789"), metrics={})
    states: dict[int, dict[str, torch.Tensor]] = {}
    ckpt_dir = tmp_path / "run"
    fit(
        tiny_config(epochs=2, freeze_backbone_epochs=1, weights=str(tmp_path / "init.pt")),
        Recorder(
            on=lambda e: states.__setitem__(e, torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)["model_state"])
        ),
        ckpt_dir,
    )
    body = [k for k in source.state_dict() if not k.startswith("fc.")]
    assert states_equal(states[1], source.state_dict(), body)  # BatchNorm statistics included
    assert not states_equal(states[2], source.state_dict(), body)
    assert not torch.equal(states[1]["fc.1.weight"], states[2]["fc.1.weight"])


def test_reporter_must_answer_continue_or_prune(tiny_config: Callable[..., TrainConfig]) -> None:
    with pytest.raises(ValueError, match="reporter returned True for epoch 1"):
        fit(tiny_config(epochs=1), lambda epoch, metrics: True)  # type: ignore[arg-type,return-value]


def test_pretrain_then_fine_tune_from_the_saved_model(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    pre_config = tiny_config(
        epochs=2, lr=1e-3, **{"dataset.classes": [0, 1, 2, 3, 4], "dataset.max_train_samples": 200}
    )
    pre = fit(pre_config)
    save_model(
        tmp_path / "digits04.pt",
        pre.model,
        pre_config,
        num_classes=pre.num_classes,
        class_names=pre.class_names,
        metrics=pre.best_metrics,
    )
    fine = fit(
        tiny_config(
            epochs=2,
            lr=1e-3,
            weights=str(tmp_path / "digits04.pt"),
            **{"dataset.classes": [5, 6, 7, 8, 9], "dataset.max_train_samples": 150},
        )
    )
    assert fine.class_names == ["5", "6", "7", "8", "9"]
    assert fine.best_metrics["val_acc"] > 0.2 + 0.25, fine.history  # chance is 1 in 5


def test_every_amp_mode_trains_the_same_on_cpu(
    full_run: tuple[FitResult, Path, TrainConfig], tiny_config: Callable[..., TrainConfig]
) -> None:
    """CPU never autocasts: amp off, fp16 (no scaler there) and the full run's auto train the same numbers."""
    reference, _, config = full_run
    assert config.amp == "auto"
    for mode in ("off", "fp16"):
        result = fit(tiny_config(**RESUME_CHANGES, amp=mode))
        assert result.status == "completed"
        assert [h["val_loss"] for h in result.history] == [h["val_loss"] for h in reference.history]
