"""The training loop's parts: learning-rate schedule, optimizer groups, one epoch, evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trials.config import TrainConfig
from trials.models import build_model, split_parameters
from trials.train import (
    build_optimizer,
    build_scheduler,
    evaluate,
    grad_scaler,
    lr_factor,
    resolve_amp,
    train_one_epoch,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("step", "total", "warmup", "cosine", "expected"),
    [
        (0, 100, 0, True, 1.0),
        (50, 100, 0, True, 0.5),
        (100, 100, 0, True, 0.0),
        (0, 100, 10, True, 0.1),  # warmup starts at 1/warmup, not 0: the first step already learns
        (9, 100, 10, True, 1.0),
        (10, 100, 10, True, 1.0),
        (55, 100, 10, True, 0.5),
        (0, 100, 4, False, 0.25),
        (50, 100, 4, False, 1.0),  # "none": constant after warmup
        (150, 100, 0, True, 0.0),  # past the end stays at 0
    ],
)
def test_lr_factor(step: int, total: int, warmup: int, cosine: bool, expected: float) -> None:
    assert lr_factor(step, total_steps=total, warmup_steps=warmup, cosine=cosine) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_groups_and_schedule(name: str) -> None:
    config = TrainConfig(
        optimizer=name,
        lr=0.1,
        backbone_lr_mult=0.1,
        momentum=0.9,
        weight_decay=0.01,  # type: ignore[arg-type]
        epochs=2,
        warmup_epochs=1,
    )
    model = build_model("resnet18", 3, dropout=0.0, weights=None)
    backbone, head = split_parameters(model)
    optimizer = build_optimizer(config, backbone, head)
    assert type(optimizer).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[name]
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(backbone), len(head)]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.01]
    if name == "sgd":
        assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([0.002, 0.02])  # warmup step 1 of 5, backbone at a tenth
    assert lrs[4] == pytest.approx([0.01, 0.1])
    assert lrs[9][1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))


def one_hot_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.eye(4)[[0, 1, 2, 3, 0, 1]]
    y = torch.tensor([0, 1, 2, 0, 0, 3])  # an identity classifier gets 4 of 6 right
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def test_evaluate_accuracy_and_mean_loss() -> None:
    model = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4) * 3)
    batches = one_hot_batches()
    metrics = evaluate(model, batches, nn.CrossEntropyLoss(), CPU)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert metrics["val_acc"] == pytest.approx(4 / 6)
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(model(x), y).item())
    assert not model.training


def test_train_one_epoch_learns_and_keeps_frozen_modules_in_eval() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(8)
    model = nn.Sequential(nn.Linear(4, 8), bn, nn.ReLU(), nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    batches = [(torch.eye(4), torch.arange(4))] * 3
    first = train_one_epoch(model, batches, optimizer, scheduler, nn.CrossEntropyLoss(), CPU)
    assert first["num_samples"] == 12 and first["lr"] == pytest.approx(0.5 / 3)  # lr of the last step
    assert scheduler.last_epoch == 3  # stepped once per batch
    for _ in range(20):
        last = train_one_epoch(model, batches, optimizer, None, nn.CrossEntropyLoss(), CPU)
    assert last["train_loss"] < first["train_loss"] / 2
    assert bn.running_mean is not None
    stats = bn.running_mean.clone()
    calls = []
    train_one_epoch(
        model, batches, optimizer, None, nn.CrossEntropyLoss(), CPU, frozen=[bn], on_first_batch=lambda: calls.append(1)
    )
    assert not bn.training and model.training
    assert torch.equal(bn.running_mean, stats)  # eval-mode BatchNorm did not update its statistics
    assert calls == [1]


def test_bf16_autocast_and_channels_last_paths_run_on_cpu() -> None:
    """The CUDA fast path's options (bf16 autocast, channels_last) work on CPU too: its code runs here."""
    torch.manual_seed(0)
    model = build_model("resnet18", 4, dropout=0.0, weights=None).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))] * 2
    trained = train_one_epoch(
        model, batches, optimizer, None, nn.CrossEntropyLoss(), CPU, amp_dtype=torch.bfloat16, channels_last=True
    )
    metrics = evaluate(model, batches, nn.CrossEntropyLoss(), CPU, amp_dtype=torch.bfloat16, channels_last=True)
    assert math.isfinite(trained["train_loss"]) and math.isfinite(metrics["val_loss"])
    assert 0.0 <= metrics["val_acc"] <= 1.0


@pytest.mark.parametrize(
    ("mode", "device", "bf16", "expected"),
    [
        ("auto", "cuda", True, torch.bfloat16),  # bf16 where the GPU supports it
        ("auto", "cuda", False, torch.float16),  # else fp16 (with a gradient scaler)
        ("bf16", "cuda", False, torch.bfloat16),  # asked for: as asked
        ("fp16", "cuda", True, torch.float16),
        ("off", "cuda", True, None),  # fp32
        ("auto", "cpu", True, None),  # never on CPU
        ("fp16", "cpu", False, None),
        ("bf16", "cpu", True, None),
    ],
)
def test_amp_mode_resolves_to_an_autocast_dtype(mode: str, device: str, bf16: bool, expected: object) -> None:
    assert resolve_amp(mode, device, bf16) is expected  # type: ignore[arg-type]


def test_a_gradient_scaler_only_for_fp16() -> None:
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert grad_scaler(torch.bfloat16, cuda) is None and grad_scaler(None, cuda) is None
    assert grad_scaler(None, CPU) is None


def test_the_scaled_step_path_runs_on_cpu() -> None:
    """fp16 training's step (scale the loss, step through the scaler, update its scale) on a CPU scaler: the
    same calls a CUDA one gets; the weights move and the loss stays finite."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))] * 3
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    trained = train_one_epoch(model, batches, optimizer, None, nn.CrossEntropyLoss(), CPU, scaler=scaler)
    assert math.isfinite(trained["train_loss"]) and trained["num_samples"] == 12
    assert scaler.get_scale() == 2.0**8  # no inf/nan gradient: no step skipped, the scale kept
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
