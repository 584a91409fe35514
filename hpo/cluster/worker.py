"""The trial task, on a Ray worker: run the workload on one trial's training config, reporting each epoch
to the coordinator, and return a JSON-safe summary.

Workers import this module, ``hpo.coordinator.actor`` and ``trials`` only (no Optuna, no database driver;
tested). Trial tasks are never retried by Ray (``max_retries=0``): the sweep loop sees the failure, records
it, and applies its own retry policy.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import ray

from trials import preemption, storage_fs
from trials.paths import CHECKPOINT_NAME
from trials.reporting import Reporter

if TYPE_CHECKING:
    from hpo.cluster.ranks import RankShape


class Workload(Protocol):
    """What a trial runs on a worker: train with ``config``, report each epoch, return a summary.

    The summary has ``status`` (completed | early_stopped | pruned | paused), ``best_metrics`` (a dict with the
    study's metric), and optionally ``epochs_run``, ``best_epoch``, ``resumed_from_epoch``, ``timings``.
    """

    def __call__(
        self, config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
    ) -> dict[str, Any]: ...


def train_workload(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """The default workload: ``trials.train.fit`` on the trial's training config."""
    from trials.config import TrainConfig
    from trials.train import fit

    result = fit(TrainConfig.from_dict(config), reporter, checkpoint_dir, num_threads=num_threads)
    return finished_summary(result, checkpoint_dir)


def finished_summary(result: Any, checkpoint_dir: str) -> dict[str, Any]:
    """A ``trials.train.FitResult``'s summary, its checkpoint deleted unless the run was paused."""
    summary: dict[str, Any] = result.summary()
    if result.status != "paused":  # a paused trial resumes from it (asha); the coordinator deletes it if not
        # a finished trial never resumes; its epoch checkpoint (a full model) is only disk to reclaim
        storage_fs.remove(storage_fs.join(checkpoint_dir, CHECKPOINT_NAME))
    return summary


@dataclass(frozen=True)
class TrialRun:
    """One trial as the driver submits it to a worker."""

    trial_id: int
    config: dict[str, Any]
    checkpoint_dir: str
    resume_from: str | None = None  # the checkpoint folder of the failed trial this one retries
    num_threads: int | None = None
    tensorboard_dir: str | None = None
    submitted_at: float | None = None  # time.time() at submission
    #: a data-parallel trial (``train_workload`` only): its ranks, and the placement group that holds them
    ranks: RankShape | None = None
    placement_group: Any = None


class GpuOutOfMemory(RuntimeError):
    """The trial ran out of GPU memory (``torch.cuda.OutOfMemoryError``), raised without the training frames
    so that their tensors are freed before the next trial on this worker's GPU starts."""


class Abandoned(RuntimeError):
    """The trial was finished (told) before a worker started it: nothing is run."""


def run_trial(run: TrialRun, coordinator: Any, workload: Workload) -> dict[str, Any]:
    """The body of a trial task, on a worker."""
    started = time.time()
    gpus = _hide_gpus_unless_given()
    ctx = ray.get_runtime_context()
    node = {
        "id": ctx.get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "gpus": gpus,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    # where and in which process the trial runs, for the dashboard and fault handling; waited for, so that
    # it is recorded before any report, and so that a trial the driver has given up on does not run
    if not ray.get(coordinator.started.remote(run.trial_id, node)):
        raise Abandoned(f"trial {run.trial_id} was finished before a worker started it")

    writer = _tensorboard(run.tensorboard_dir, run.config)

    def reporter(epoch: int, metrics: Mapping[str, float]) -> str:
        values = {k: float(v) for k, v in metrics.items()}
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()
        return str(ray.get(coordinator.report.remote(run.trial_id, epoch, values)))

    storage_fs.make_folder(run.checkpoint_dir)
    if run.resume_from and run.resume_from != run.checkpoint_dir:
        # a retry continues from the failed trial's last checkpoint (a local folder or a URL every node reaches)
        storage_fs.copy(
            storage_fs.join(run.resume_from, CHECKPOINT_NAME), storage_fs.join(run.checkpoint_dir, CHECKPOINT_NAME)
        )
    oom: str | None = None
    try:
        try:
            summary = _train(run, reporter, workload)
        except Exception as e:
            if not _is_cuda_oom(e):
                raise
            oom = " ".join(str(e).split())[:300]
        if oom is not None:  # raised here, outside the handler: the training frames are gone already
            raise GpuOutOfMemory(oom)
    finally:
        if writer is not None:
            writer.close()
        _release_gpu_memory()
    summary["node"] = node
    summary["duration_s"] = time.time() - started
    if run.submitted_at is not None:  # waiting for a worker and its resources (clocks of other hosts may differ)
        summary["queued_s"] = max(0.0, started - run.submitted_at)
    return summary


def _train(run: TrialRun, reporter: Reporter, workload: Workload) -> dict[str, Any]:
    """Run the trial's workload. A SIGTERM to this worker (a node shutting down, spot preemption, ``docker
    stop``) makes ``fit`` save its checkpoint after the batch in flight (``trials.preemption``); then the worker
    exits as the signal meant (Ray's handler), the sweep sees a dead worker and retries the trial from there."""
    if run.ranks is not None:
        from hpo.cluster.ranks import train_ranks

        return train_ranks(run, reporter)
    with preemption.checkpoint_on_sigterm() as previous:
        try:
            return workload(run.config, reporter, run.checkpoint_dir, num_threads=run.num_threads)
        except preemption.Preempted:
            pass
    preemption.terminate(previous)  # outside the handler: the one it replaced is back
    raise preemption.Preempted(f"trial {run.trial_id}: stopped by SIGTERM")  # a handler that let the process live


def _hide_gpus_unless_given() -> list[str]:
    """The GPUs Ray gave this task. A task given none sees none: Ray 2.60 leaves ``CUDA_VISIBLE_DEVICES`` unset
    for it (ray#54868), so it would see every GPU of the node, outside Ray's accounting. Set before torch
    initialises CUDA (workers that get no GPU never get one, so they never initialised it)."""
    gpus = [str(g) for g in ray.get_gpu_ids()]
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return gpus


def _tensorboard(log_dir: str | None, config: dict[str, Any]) -> Any:
    """A TensorBoard writer for one trial's run directory (its config as text), or None."""
    if not log_dir:
        return None
    import json

    from torch.utils.tensorboard import SummaryWriter

    # TensorBoard writes local folders (and, with its own optional packages, s3:// and gs://), not file:// URLs
    writer = SummaryWriter(log_dir=storage_fs.local_path(log_dir) or log_dir)
    writer.add_text("train_config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)
    return writer


def _is_cuda_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


def _release_gpu_memory() -> None:
    """Return cached CUDA memory so the next trial on a shared GPU gets it (workers are reused)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()  # tensors held by reference cycles of the finished (or failed) run
        torch.cuda.empty_cache()


def trial_task(cpus: float, gpus: float) -> Any:
    """The remote trial function with these resources. Workers are reused across trials (``max_calls=0``;
    Ray's default for GPU tasks is a fresh process each time, which costs seconds of imports per trial)."""
    return ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=0)(run_trial)


def warm_workers(cpus: float, gpus: float, workload: Workload, n: int) -> list[Any]:
    """Start ``n`` workers of a trial's shape that import what a trial imports (torch for the default
    workload), while the coordinator starts: Ray reuses them for the first trials. Nothing waits for them."""
    warm = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=0)(_import_workload)
    return [warm.remote(workload) for _ in range(n)]


def _import_workload(workload: Workload) -> int:
    # unpickling ``workload`` imported its module; the default workload imports the training stack lazily
    _hide_gpus_unless_given()
    if workload is train_workload:
        import trials.train  # noqa: F401
    return os.getpid()
