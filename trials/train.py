"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit`` (with early stopping and checkpoints).

``fit`` is what a sweep trial and ``hpo train`` both run. It reports ``(epoch, metrics)`` to a reporter
after every epoch and stops when the answer is ``"prune"``; it knows nothing of Optuna or Ray.
Metrics per epoch: ``val_acc`` (top-1 in [0, 1]), ``val_loss`` (plain cross-entropy, without label
smoothing so that runs with different smoothing compare), ``train_loss`` (mean over the epoch, with
smoothing) and ``lr`` (the head's learning rate at the epoch's last step).

``fit`` selects on val only and never loads the held-out test split; ``evaluate_test`` measures a trained
model on it afterwards (``hpo train``, ``hpo verify``), as ``test_acc`` and ``test_loss``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from trials import distributed, early_stopping, preemption, storage_fs
from trials.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    cpu_state,
    rng_state,
    set_rng_state,
)
from trials.config import AmpMode, TrainConfig
from trials.data import DataBundle, ImageLoader, load_data, load_test, resolve_num_workers
from trials.errors import TrainConfigError, one_line
from trials.models import backbone_modules, build_model, split_parameters
from trials.paths import CHECKPOINT_NAME
from trials.reporting import CONTINUE, PAUSE, PRUNE, Reporter, json_safe

METRIC_KEYS = ("val_acc", "val_loss", "train_loss", "lr")
#: The test-split counterpart of each metric ``fit`` can monitor.
TEST_METRICS = {"val_acc": "test_acc", "val_loss": "test_loss"}

_log = logging.getLogger(__name__)

#: How a ``fit`` ended. ``paused``: the reporter answered ``"pause"``; the run was saved at that epoch, and a later
#: ``fit`` with the same config and checkpoint folder resumes after it.
Status = Literal["completed", "early_stopped", "pruned", "paused"]


@dataclass
class FitResult:
    """What ``fit`` did. ``model`` holds the best epoch's weights unless the run was pruned or paused."""

    status: Status
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    resumed_from_epoch: int
    num_classes: int
    class_names: list[str]
    model: nn.Module
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the model as plain JSON data (NaN and infinities become None)."""
        return json_safe(
            {
                "status": self.status,
                "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "history": self.history,
                "resumed_from_epoch": self.resumed_from_epoch,
                "num_classes": self.num_classes,
                "class_names": self.class_names,
                "timings": self.timings,
            }
        )


# ---------------------------------------------------------------- one epoch


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    frozen: Sequence[nn.Module] = (),
    on_first_batch: Callable[[], None] | None = None,
    on_first_step: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
    resume: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader``; step ``scheduler`` after every batch.

    ``frozen`` modules stay in eval mode (a frozen backbone's BatchNorm keeps its running statistics).
    The loss is summed on the device and read once at the end: a per-batch ``.item()`` would make the
    host wait for the accelerator at every step. ``on_first_batch`` is called when the first batch has been
    fetched, ``on_first_step`` after its ``optimizer.step()``. A ``scaler`` (fp16 autocast) scales the loss
    before ``backward`` and steps through itself (a step with inf/nan gradients is skipped).
    ``stop`` is asked after every step: True ends the pass there. ``resume`` (what an epoch stopped so returned:
    ``batches``, ``loss_sum``, ``num_samples``, ``lr``) goes on with that epoch: its first ``batches`` batches are
    drawn (the loader replays the epoch's order) and skipped.
    Returns ``{"train_loss": mean loss, "lr": last group's lr at the last step, "num_samples": n, "batches": the
    batches trained so far this epoch, "loss_sum": the summed loss}``.
    """
    model.train()
    for m in frozen:
        m.eval()
    total = torch.full((), float(resume["loss_sum"]) if resume else 0.0, device=device)
    seen = int(resume["num_samples"]) if resume else 0
    skip = int(resume["batches"]) if resume else 0
    lr = float(resume["lr"]) if resume else float(optimizer.param_groups[-1]["lr"])
    batches = 0
    for x, y in loader:
        batches += 1
        if batches <= skip:
            continue
        if batches == skip + 1 and on_first_batch is not None:
            on_first_batch()
        x = x.to(
            device, non_blocking=True, memory_format=torch.channels_last if channels_last else torch.preserve_format
        )
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        _step(loss, optimizer, scaler)
        if batches == skip + 1 and on_first_step is not None:
            on_first_step()
        lr = optimizer.param_groups[-1]["lr"]
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().float() * y.shape[0]
        seen += y.shape[0]
        if stop is not None and stop():
            break
    loss_sum = total.item()
    mean = loss_sum / seen if seen else math.nan
    return {
        "train_loss": mean,
        "lr": float(lr),
        "num_samples": float(seen),
        "batches": float(batches),
        "loss_sum": loss_sum,
    }


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy (in [0, 1]) and mean loss of ``model`` over ``loader``, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(
                device, non_blocking=True, memory_format=torch.channels_last if channels_last else torch.preserve_format
            )
            y = y.to(device, non_blocking=True)
            with _autocast(device, amp_dtype):
                logits = model(x)
            loss_sum += loss_fn(logits.float(), y) * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()
            seen += y.shape[0]
    if seen == 0:
        return {"val_acc": math.nan, "val_loss": math.nan}
    return {"val_acc": correct.item() / seen, "val_loss": loss_sum.item() / seen}


# ---------------------------------------------------------------- building blocks of fit


def resolve_amp(mode: AmpMode, device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on a device, or None (fp32): never on CPU nor with ``off``;
    ``auto`` is bf16 where the GPU supports it (``bf16_supported``), else fp16 (which trains with a scaler)."""
    if device_type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def amp_dtype_on(mode: AmpMode, device: torch.device) -> torch.dtype | None:
    """``resolve_amp`` for ``device``, asking CUDA whether it supports bf16."""
    cuda = device.type == "cuda"
    return resolve_amp(mode, device.type, cuda and torch.cuda.is_bf16_supported())


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (its small gradients would underflow); None otherwise."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; asking for ``cuda`` without CUDA is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("device", name, "CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


def build_optimizer(
    config: TrainConfig, backbone: list[nn.Parameter], head: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum) in two groups: backbone at ``lr * backbone_lr_mult``, head at ``lr``.

    The head is the last group, so ``param_groups[-1]["lr"]`` is the reported learning rate.
    """
    groups = [
        {"params": backbone, "lr": config.lr * config.backbone_lr_mult, "name": "backbone"},
        {"params": head, "lr": config.lr, "name": "head"},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, cosine: bool) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warmup over ``warmup_steps``,
    then cosine decay to 0 at ``total_steps`` (or constant 1 when ``cosine`` is False)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: ``cosine`` (warmup, then cosine to 0) or ``none`` (warmup, then constant)."""
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    cosine = config.scheduler == "cosine"

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total, warmup_steps=warmup, cosine=cosine)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loaders(
    train: Dataset[Any],
    val: Dataset[Any],
    config: TrainConfig,
    generator: torch.Generator,
    *,
    pin_memory: bool,
    cpus: int | None = None,
    group: distributed.Group | None = None,
) -> tuple[ImageLoader, ImageLoader]:
    """Shuffled train loader drawing from ``generator`` (so the order is reproducible) and a val loader, with
    ``config.num_workers`` worker processes (``auto``: from ``cpus``, the trial's CPUs; see
    ``trials.data.resolve_num_workers``). With a ``group``, this rank's share of each (``trials.distributed``).

    An unreadable image raises DataError naming the file, even when a worker process decoded it."""
    workers = resolve_num_workers(config.num_workers, train, cpus)
    common: dict[str, Any] = {
        "batch_size": config.batch_size,
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": workers > 0,
    }
    # A last batch of one sample would crash BatchNorm in train mode; drop only that case.
    n_train = len(train)  # type: ignore[arg-type]  # map-style datasets are sized
    if group is not None:
        return _rank_loaders(train, val, config, generator, group, common)
    train_loader = ImageLoader(
        train, shuffle=True, generator=generator, drop_last=n_train % config.batch_size == 1, **common
    )
    return train_loader, ImageLoader(val, shuffle=False, **common)


def _rank_loaders(
    train: Dataset[Any],
    val: Dataset[Any],
    config: TrainConfig,
    generator: torch.Generator,
    group: distributed.Group,
    common: dict[str, Any],
) -> tuple[ImageLoader, ImageLoader]:
    n_train, n_val = len(train), len(val)  # type: ignore[arg-type]
    order = torch.utils.data.RandomSampler(train, generator=generator)  # type: ignore[arg-type]  # sized
    batches = distributed.ShardedBatches(order, n_train, config.batch_size, group)
    per_rank = {k: v for k, v in common.items() if k != "batch_size"}
    train_loader = ImageLoader(train, batch_sampler=batches, generator=generator, **per_rank)
    mine = distributed.val_indices(n_val, group)
    val_batch = max(1, config.batch_size // group.world)
    return train_loader, ImageLoader(val, sampler=mine, **{**common, "batch_size": val_batch})


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _ask(reporter: Reporter | None, epoch: int, entry: Mapping[str, float]) -> str:
    if reporter is None:
        return CONTINUE
    answer = reporter(epoch, {k: float(entry[k]) for k in METRIC_KEYS})
    if answer not in (CONTINUE, PRUNE, PAUSE):
        raise ValueError(
            f"reporter returned {answer!r} for epoch {epoch}; expected {CONTINUE!r}, {PRUNE!r} or {PAUSE!r}"
        )
    return answer


def _start_loader_workers(loader: ImageLoader) -> None:
    """Start a persistent loader's worker processes now (the next pass reuses them, as a later epoch does)."""
    iter(loader.loader)


def _set_trainable(params: Iterable[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


class _TimedBatches:
    """Iterates ``loader`` and adds the time spent waiting for each batch (loading, decoding, augmenting in
    this process; or waiting for DataLoader workers) to ``seconds``: the part of an epoch that is not steps."""

    def __init__(self, loader: ImageLoader) -> None:
        self.loader = loader
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self.seconds += time.perf_counter() - t0
            if batch is None:
                return
            yield batch


@dataclass
class _Run:
    """The state that a checkpoint carries from one epoch to the next."""

    history: list[dict[str, float]] = field(default_factory=list)
    tracker: early_stopping.Tracker = field(default_factory=early_stopping.Tracker)
    best_state: dict[str, torch.Tensor] | None = None
    finished: str | None = None  # "completed" / "early_stopped" once the last epoch is done
    # an epoch stopped part-way (a SIGTERM): ``epoch`` and what ``train_one_epoch`` returned for its first batches
    partial: dict[str, float] | None = None


def _save_checkpoint(
    path: str,
    config: TrainConfig,
    run: _Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    num_classes: int,
    class_names: list[str],
    loader_state: torch.Tensor | None = None,
) -> None:
    """Save the run to ``path`` (a local path or an fsspec URL). Mid-epoch (``run.partial``), ``loader_state`` is
    the loader generator's state at the epoch's start, so that a resume replays that epoch's order."""
    epoch = len(run.history)
    partial = run.partial is not None
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "epoch": epoch,
            "history": run.history,
            "finished": run.finished,
            "model_state": model.state_dict(),
            # The best weights are stored only when they differ from the current ones: halves the file
            # while the run keeps improving.
            "best_epoch": run.tracker.best_epoch,
            "best_model_state": run.best_state if run.tracker.best_epoch != epoch or partial else None,
            "early_stopping": run.tracker.to_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(),
            "rng": {**rng_state(), "loader": loader_state if loader_state is not None else generator.get_state()},
            "num_classes": num_classes,
            "class_names": class_names,
            "partial": run.partial,
        },
        path,
    )


def _resume(
    path: str,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    log: Callable[[str], None],
) -> _Run | None:
    """Restore the run saved at ``path`` if it was made by the same config; None to start fresh."""
    if not storage_fs.exists(path):
        return None
    try:
        ckpt = storage_fs.load_torch(path)
    except Exception as e:  # a damaged file must not stop the trial: it is overwritten after epoch 1
        log(f"checkpoint {path} is unreadable ({one_line(e)}); starting fresh")
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        log(f"checkpoint {path} has an unknown format; starting fresh")
        return None
    if ckpt.get("config") != config.to_dict():
        log(f"checkpoint {path} was made by a different config; starting fresh")
        return None
    model.load_state_dict(ckpt["model_state"])
    optimizer.load_state_dict(ckpt["optimizer_state"])
    scheduler.load_state_dict(ckpt["scheduler_state"])
    rng = ckpt["rng"]
    generator.set_state(rng["loader"])
    set_rng_state(rng)
    tracker = early_stopping.Tracker.from_dict(ckpt["early_stopping"])
    best = ckpt["best_model_state"]
    if best is None and tracker.best_epoch == ckpt["epoch"]:
        best = ckpt["model_state"]
    history = [dict(h) for h in ckpt["history"]]
    partial = ckpt.get("partial")
    within = f", {int(partial['batches'])} batches into epoch {int(partial['epoch'])}" if partial else ""
    log(f"resuming from {path} after epoch {ckpt['epoch']}{within}")
    return _Run(history=history, tracker=tracker, best_state=best, finished=ckpt.get("finished"), partial=partial)


# ---------------------------------------------------------------- fit


def model_costs(model: nn.Module, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """``params_m`` (the model's parameters, millions) and, when ``config.latency_batch`` > 0, ``latency_ms``:
    the median time of one forward pass of a batch of that many images at the trained size, on ``device``,
    in eval mode, after 3 warm-up passes (11 timed)."""
    costs = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if config.latency_batch <= 0:
        return costs
    size = config.resolved_image_size
    batch = torch.randn(config.latency_batch, 3, size, size, device=device)
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(14):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000.0)
    model.train(was_training)
    costs["latency_ms"] = float(statistics.median(times))
    return costs


def fit(
    config: TrainConfig,
    reporter: Reporter | None = None,
    checkpoint_dir: str | Path | None = None,
    *,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    group: distributed.Group | None = None,
) -> FitResult:
    """Fine-tune ``config.model`` on ``config.dataset`` for up to ``config.epochs`` epochs.

    After every epoch ``reporter(epoch, metrics)`` is called; ``"prune"`` stops the run (status
    ``pruned``); ``"pause"`` saves a checkpoint at that epoch, whatever ``checkpoint_every_s``, and stops the run
    (status ``paused``: a later call with the same config and ``checkpoint_dir`` resumes after that epoch; an
    answer at the last epoch, or at one where early stopping ends the run, is not a pause). Early stopping on
    ``config.metric`` ends it with status ``early_stopped``. With a
    ``checkpoint_dir`` the run is saved after an epoch (before it is reported) once
    ``config.checkpoint_every_s`` seconds of training have passed since the last save (0: every epoch), and
    a later call with the same config resumes it, first replaying the saved epochs through the reporter.
    ``checkpoint_dir`` is a local folder or an fsspec URL (``trials.storage_fs``). Inside
    ``trials.preemption.checkpoint_on_sigterm()``, a SIGTERM saves the run after the batch in flight and raises
    ``Preempted``; a later call goes on from the next batch of that epoch (a data-parallel ``group`` is not
    stopped part-way: its ranks must stop together).
    ``num_threads`` (the trial's CPUs) sets torch's CPU threads (CPU only) and what ``num_workers: auto``
    follows. The returned model holds the best epoch's weights unless the run was pruned or paused.

    ``FitResult.timings`` (seconds; ``*_at`` are ``time.time()`` stamps): ``dataset_s`` (splits and
    datasets; the decoded base data is cached per process), ``model_s`` (build, weight load, to the device),
    ``setup_s`` (start to the first batch), ``first_batch_at``, ``first_step_at`` (after the first
    ``optimizer.step()``), ``train_s`` and ``eval_s`` (whole epochs' training and validation passes), of which
    ``train_data_s`` and ``eval_data_s`` waited for batches (the rest is steps: forward, backward, optimizer;
    val forward passes), ``checkpoint_s``, ``report_s`` (inside the reporter), ``total_s``.

    With a ``group``, this process is one rank of a data-parallel run (``trials.distributed``: ``batch_size``
    is the global batch; rank 0 alone calls ``reporter`` and writes checkpoints; every rank ends the same way).
    """
    if group is None:
        return _fit(config, reporter, checkpoint_dir, num_threads, log, None)
    with distributed.joined(group, resolve_device(config.device)):
        return _fit(config, reporter, checkpoint_dir, num_threads, log, group)


def _fit(
    config: TrainConfig,
    reporter: Reporter | None,
    checkpoint_dir: str | Path | None,
    num_threads: int | None,
    log: Callable[[str], None] | None,
    group: distributed.Group | None,
) -> FitResult:
    t_start = time.perf_counter()
    log = log or _log.info
    timings: dict[str, float] = {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "report_s": 0.0}
    parts = _build_parts(config, num_threads, timings, group)
    ckpt_path = storage_fs.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir is not None else None
    resumed = (
        _resume(ckpt_path, config, parts.model, parts.optimizer, parts.scheduler, parts.generator, log)
        if ckpt_path
        else None
    )
    run = resumed or _Run()
    if group is not None:
        distributed.agree(len(run.history), "the epochs restored from the checkpoint", group, parts.device)
        reporter = distributed.shared_answers(reporter, group, parts.device)
    fitting = _Fitting(config, parts, run, reporter, ckpt_path, log, timings, t_start)
    replayed = fitting.replay()
    return replayed if replayed is not None else fitting.train()


@dataclass
class _Parts:
    """What ``fit`` trains with, built by ``_build_parts``."""

    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None  # fp16 autocast only
    data: DataBundle
    model: nn.Module
    backbone: list[nn.Parameter]
    backbone_bn: Sequence[nn.Module]  # a frozen backbone's BatchNorm layers, kept in eval mode
    generator: torch.Generator  # the train loader's shuffle order; saved in checkpoints
    timed_train: _TimedBatches
    timed_val: _TimedBatches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_loss_fn: nn.Module
    eval_loss_fn: nn.Module
    group: distributed.Group | None = None  # a data-parallel run: this rank's place in it
    train_model: nn.Module | None = None  # what trains: ``model`` in DistributedDataParallel for a group
    val_count: int = 0  # a group's rank: the validation samples it evaluates

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's checkpoints (rank 0 of a group, or the only process)."""
        return self.group is None or self.group.leader


def _build_parts(
    config: TrainConfig, num_threads: int | None, timings: dict[str, float], group: distributed.Group | None = None
) -> _Parts:
    """Device, data, model, loaders, optimizer and schedule for ``fit``; records ``dataset_s`` and ``model_s``.

    The order is part of the result: the global seed first, then the model's initial weights, then the
    loader's own generator, so the same config draws the same numbers. Rank 0 of a ``group`` draws what one
    process draws; the other ranks reseed after the model (their dropout and augmentation differ from it)."""
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    if not on_cuda and num_threads:
        torch.set_num_threads(num_threads)
    _seed_everything(config.seed)

    t0 = time.perf_counter()
    data = load_data(config.dataset, image_size=config.resolved_image_size, aug_strength=config.aug_strength)
    t1 = time.perf_counter()
    model = build_model(config.model, data.num_classes, dropout=config.dropout, weights=config.weights)
    if on_cuda:  # autocast + channels_last is the fast path for convnets on tensor cores
        torch.backends.cudnn.benchmark = True
        model = model.to(device).to(memory_format=torch.channels_last)
    else:
        model = model.to(device)
    timings["dataset_s"], timings["model_s"] = t1 - t0, time.perf_counter() - t1
    amp_dtype = amp_dtype_on(config.amp, device)
    backbone, head = split_parameters(model)
    backbone_bn = [m for m in backbone_modules(model) if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    train_model = model
    if group is not None:
        if group.rank:
            _seed_everything(config.seed + 7919 * group.rank)
        train_model = distributed.wrap(model, device, unused_parameters=config.freeze_backbone_epochs > 0)
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    train_loader, val_loader = make_loaders(
        data.train, data.val, config, generator, pin_memory=on_cuda, cpus=num_threads, group=group
    )
    timed_train, timed_val = _TimedBatches(train_loader), _TimedBatches(val_loader)
    optimizer = build_optimizer(config, backbone, head)
    scheduler = build_scheduler(optimizer, config, len(train_loader))
    return _Parts(
        device=device,
        amp_dtype=amp_dtype,
        scaler=grad_scaler(amp_dtype, device),
        data=data,
        model=model,
        backbone=backbone,
        backbone_bn=backbone_bn,
        generator=generator,
        timed_train=timed_train,
        timed_val=timed_val,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        eval_loss_fn=nn.CrossEntropyLoss(),
        group=group,
        train_model=train_model,
        val_count=len(distributed.val_indices(len(data.val), group)) if group else 0,  # type: ignore[arg-type]
    )


class _Fitting:
    """One ``fit`` once its parts are built (and a checkpoint, if any, restored): replaying a resumed run's
    epochs, the epoch loop, and the result. ``timings`` is ``fit``'s dict, filled in as the run goes."""

    def __init__(
        self,
        config: TrainConfig,
        parts: _Parts,
        run: _Run,
        reporter: Reporter | None,
        ckpt_path: str | None,
        log: Callable[[str], None],
        timings: dict[str, float],
        t_start: float,
    ) -> None:
        self.config, self.parts, self.run = config, parts, run
        self.reporter, self.ckpt_path, self.log = reporter, ckpt_path, log
        self.timings, self.t_start = timings, t_start
        self.resumed_from = len(run.history)
        self.last_saved = 0.0  # perf_counter at the last save (or the loop's start): see checkpoint_every_s
        self.saved_epoch = self.resumed_from  # the epoch the checkpoint holds
        self.epochs_started = 0  # train passes begun by this fit: a persistent loader's first one starts its workers

    def result(self, status: Status) -> FitResult:
        run, parts, timings = self.run, self.parts, self.timings
        model = parts.model
        stopped = status in ("pruned", "paused")
        if not stopped and run.best_state is not None:
            model.load_state_dict(run.best_state)
        _set_trainable(parts.backbone, True)  # hand back an ordinary model, even after a frozen last epoch
        best_epoch = run.tracker.best_epoch or len(run.history)  # no valid metric at all: the last epoch
        best = run.history[best_epoch - 1] if best_epoch else {}
        costs = model_costs(model, self.config, parts.device) if not stopped else {}
        timings["train_data_s"], timings["eval_data_s"] = parts.timed_train.seconds, parts.timed_val.seconds
        timings["total_s"] = time.perf_counter() - self.t_start
        timings.setdefault("setup_s", timings["total_s"])  # no batch trained (a finished run replayed)
        timings.setdefault("first_batch_at", math.nan)
        timings.setdefault("first_step_at", math.nan)
        return FitResult(
            status=status,
            epochs_run=len(run.history),
            best_epoch=best_epoch,
            best_metrics={**{k: float(best[k]) for k in METRIC_KEYS if k in best}, **costs},
            history=run.history,
            resumed_from_epoch=self.resumed_from,
            num_classes=parts.data.num_classes,
            class_names=list(parts.data.class_names),
            model=model,
            timings=timings,
        )

    def ask(self, epoch: int, entry: Mapping[str, float]) -> str:
        t = time.perf_counter()
        answer = _ask(self.reporter, epoch, entry)
        self.timings["report_s"] += time.perf_counter() - t
        return answer

    def replay(self) -> FitResult | None:
        """A resumed run replays its past epochs, and the pruner may say stop. The result when the run ends
        here (pruned now, or finished before it was saved); None when it goes on training."""
        run, config = self.run, self.config
        for entry in list(run.history):
            answer = self.ask(int(entry["epoch"]), entry)
            if answer == PAUSE and int(entry["epoch"]) == len(run.history) and run.finished is None:
                return self.result("paused")  # paused again where it was saved: nothing to train or save
            if answer == PRUNE:
                del run.history[int(entry["epoch"]) :]
                run.tracker = early_stopping.Tracker()  # the best epoch is now the best of what is kept
                for kept in run.history:
                    run.tracker = early_stopping.update(
                        run.tracker,
                        int(kept["epoch"]),
                        kept[config.metric],
                        mode=config.mode,
                        min_delta=config.early_stopping.min_delta,
                    )
                return self.result("pruned")
        if run.finished in ("completed", "early_stopped"):
            return self.result(run.finished)  # type: ignore[arg-type]
        return None

    def first_batch(self) -> None:
        if "first_batch_at" not in self.timings:
            self.timings["first_batch_at"] = time.time()
            self.timings["setup_s"] = time.perf_counter() - self.t_start

    def first_step(self) -> None:
        self.timings.setdefault("first_step_at", time.time())

    def train(self) -> FitResult:
        """The epochs after ``resumed_from`` up to ``config.epochs``: each trained, evaluated, recorded, maybe
        saved, logged and reported; the run ends early when pruned or early-stopped."""
        config, log = self.config, self.log
        patience = config.early_stopping.patience
        self.last_saved = time.perf_counter()  # training time since then decides the next checkpoint
        for epoch in range(self.resumed_from + 1, config.epochs + 1):
            entry, t0, t1, t2 = self.one_epoch(epoch)
            stop = self.record(epoch, entry)
            self.maybe_save(t2)
            log(
                f"epoch {epoch}/{config.epochs} train_loss={entry['train_loss']:.4f} "
                f"val_loss={entry['val_loss']:.4f} val_acc={entry['val_acc']:.4f} lr={entry['lr']:.3g} "
                f"({t1 - t0:.1f}s train, {t2 - t1:.1f}s eval)"
            )
            answer = self.ask(epoch, entry)
            if answer == PRUNE:
                log(f"pruned after epoch {epoch}")
                return self.result("pruned")
            if answer == PAUSE and self.run.finished is None:
                if self.saved_epoch != epoch:
                    self.save(t2)  # a paused run resumes from this epoch, whatever checkpoint_every_s
                log(f"paused after epoch {epoch}")
                return self.result("paused")
            if stop:
                log(
                    f"early stop after epoch {epoch}: no {config.metric} improvement for {patience} epochs "
                    f"(best epoch {self.run.tracker.best_epoch})"
                )
                return self.result("early_stopped")
        return self.result("completed")

    def one_epoch(self, epoch: int) -> tuple[dict[str, float], float, float, float]:
        """Train and evaluate epoch ``epoch``: its history entry, and ``perf_counter`` before training, after
        training and after evaluation."""
        parts, config = self.parts, self.config
        frozen = epoch <= config.freeze_backbone_epochs
        _set_trainable(parts.backbone, not frozen)
        partial, self.run.partial = self.run.partial, None
        resume = partial if partial is not None and int(partial["epoch"]) == epoch else None
        # whether this pass's loader iterator is a new one (drawing its workers' seed before the epoch's order)
        fresh_loader = self.epochs_started == 0 or not parts.timed_train.loader.loader.persistent_workers
        if resume is not None:
            fresh_loader = bool(resume.get("fresh_loader", 1.0))  # the stopped pass's, replayed as it was
        if not fresh_loader and self.epochs_started == 0:  # a persistent loader's later pass, resumed first here
            state = parts.generator.get_state()  # as the checkpoint left it: the epoch's start
            _start_loader_workers(parts.timed_train.loader)  # draws the workers' seed, as the stopped run had
            parts.generator.set_state(state)
        loader_state = parts.generator.get_state()  # the epoch's shuffle order is drawn from this state
        self.epochs_started += 1
        t0 = time.perf_counter()
        trained = train_one_epoch(
            parts.train_model or parts.model,
            parts.timed_train,
            parts.optimizer,
            parts.scheduler,
            parts.train_loss_fn,
            parts.device,
            amp_dtype=parts.amp_dtype,
            scaler=parts.scaler,
            channels_last=parts.on_cuda,
            frozen=parts.backbone_bn if frozen else (),
            on_first_batch=self.first_batch,
            on_first_step=self.first_step,
            stop=preemption.requested if parts.group is None else None,  # a group's ranks must stop together
            resume=resume,
        )
        if trained["batches"] < len(parts.timed_train):
            self.preempted(epoch, {**trained, "fresh_loader": float(fresh_loader)}, loader_state)
        t1 = time.perf_counter()
        metrics = evaluate(
            parts.model,
            parts.timed_val,
            parts.eval_loss_fn,
            parts.device,
            amp_dtype=parts.amp_dtype,
            channels_last=parts.on_cuda,
        )
        if parts.group is not None:  # every rank's samples: the one-process definitions
            trained = distributed.reduce_train(trained, parts.device)
            metrics = distributed.reduce_eval(metrics, parts.val_count, parts.device)
        t2 = time.perf_counter()
        self.timings["train_s"] += t1 - t0
        self.timings["eval_s"] += t2 - t1
        entry = {
            "epoch": epoch,
            "val_acc": metrics["val_acc"],
            "val_loss": metrics["val_loss"],
            "train_loss": trained["train_loss"],
            "lr": trained["lr"],
        }
        return entry, t0, t1, t2

    def record(self, epoch: int, entry: dict[str, float]) -> bool:
        """Add ``entry`` to the run (history, early-stopping state, best weights, finished); whether early
        stopping ends the run after this epoch."""
        run, config = self.run, self.config
        run.history.append(entry)
        run.tracker = early_stopping.update(
            run.tracker, epoch, entry[config.metric], mode=config.mode, min_delta=config.early_stopping.min_delta
        )
        if run.tracker.best_epoch == epoch:
            run.best_state = cpu_state(self.parts.model)
        stop = early_stopping.should_stop(run.tracker, config.early_stopping.patience) and epoch < config.epochs
        if stop or epoch == config.epochs:
            run.finished = "early_stopped" if stop else "completed"
        return stop

    def maybe_save(self, t_eval_end: float) -> None:
        """Save a checkpoint when there is a folder and ``checkpoint_every_s`` of training have passed since
        the last save, as of ``t_eval_end`` (the epoch's end)."""
        if self.ckpt_path is None or t_eval_end - self.last_saved < self.config.checkpoint_every_s:
            return
        self.save(t_eval_end)

    def preempted(self, epoch: int, trained: Mapping[str, float], loader_state: torch.Tensor) -> None:
        """A SIGTERM stopped epoch ``epoch`` after ``trained["batches"]`` batches: save the run as it is (a later
        ``fit`` goes on from the next batch) and raise ``Preempted``."""
        keys = ("batches", "loss_sum", "num_samples", "lr", "fresh_loader")
        self.run.partial = {"epoch": float(epoch), **{k: float(trained[k]) for k in keys}}
        self.save(time.perf_counter(), loader_state)
        where = f"saved to {self.ckpt_path}" if self.ckpt_path else "no checkpoint folder"
        self.log(f"SIGTERM: stopped after batch {int(trained['batches'])} of epoch {epoch}; {where}")
        raise preemption.Preempted(f"stopped by SIGTERM after batch {int(trained['batches'])} of epoch {epoch}")

    def save(self, t_eval_end: float, loader_state: torch.Tensor | None = None) -> None:
        """Save a checkpoint of the run as it is now (when there is a folder and this process writes it)."""
        if self.ckpt_path is None or not self.parts.writes:
            return
        parts = self.parts
        _save_checkpoint(
            self.ckpt_path,
            self.config,
            self.run,
            parts.model,
            parts.optimizer,
            parts.scheduler,
            parts.generator,
            parts.data.num_classes,
            list(parts.data.class_names),
            loader_state,
        )
        self.last_saved = time.perf_counter()
        self.saved_epoch = len(self.run.history)
        self.timings["checkpoint_s"] += self.last_saved - t_eval_end


# ---------------------------------------------------------------- the held-out test split


def evaluate_test(model: nn.Module, config: TrainConfig) -> dict[str, float]:
    """``test_acc`` and ``test_loss`` of a trained ``model`` on ``config``'s held-out test split
    (``load_test``), measured by ``evaluate`` as val is: eval mode, plain cross-entropy, the config's
    device, batch size and autocast. Raises DataError when the config holds no test split out."""
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    test = load_test(config.dataset, image_size=config.resolved_image_size)
    loader = ImageLoader(
        test,
        shuffle=False,
        batch_size=config.batch_size,
        num_workers=resolve_num_workers(config.num_workers, test),
        pin_memory=on_cuda,
    )
    amp_dtype = amp_dtype_on(config.amp, device)
    metrics = evaluate(
        model.to(device), loader, nn.CrossEntropyLoss(), device, amp_dtype=amp_dtype, channels_last=on_cuda
    )
    return {TEST_METRICS[k]: v for k, v in metrics.items()}


def fit_and_test(
    config: TrainConfig, num_threads: int | None = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``fit`` (no reporter, no checkpoints: exactly what ``hpo train`` runs), then ``evaluate_test`` on the
    best epoch's weights. Returns ``FitResult.summary()`` with ``test_metrics`` added: plain JSON data, for
    a task on a remote worker (``hpo verify``)."""
    result = fit(config, num_threads=num_threads, log=log)
    summary = result.summary()
    summary["test_metrics"] = json_safe(evaluate_test(result.model, config))
    return summary
