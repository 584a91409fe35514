"""Ray: start or join a cluster, run trials as Ray tasks, host the coordinator actor.

Workers import this module, ``hpo.coordinator_actor`` and ``trials`` only (no Optuna, no database driver;
tested): a trial task gets its full training config and a handle to the coordinator, reports each epoch
through it, and returns a JSON-safe summary. Trial tasks are never retried by Ray (``max_retries=0``): the
sweep loop sees the failure, records it, and applies its own retry policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray

log = logging.getLogger("hpo.dispatch")


Reporter = Callable[[int, Mapping[str, float]], str]


class Workload(Protocol):
    """What a trial runs on a worker: train with ``config``, report each epoch, return a summary.

    The summary has ``status`` (completed | early_stopped | pruned), ``best_metrics`` (a dict with the
    study's metric), and optionally ``epochs_run``, ``best_epoch``, ``resumed_from_epoch``, ``timings``.
    """

    def __call__(
        self, config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
    ) -> dict[str, Any]: ...


CHECKPOINT_FILE = "checkpoint.pt"


def train_workload(
    config: dict[str, Any], reporter: Reporter, checkpoint_dir: str, *, num_threads: int | None
) -> dict[str, Any]:
    """The default workload: ``trials.train.fit`` on the trial's training config."""
    from trials.config import TrainConfig
    from trials.train import fit

    result = fit(TrainConfig.from_dict(config), reporter, checkpoint_dir, num_threads=num_threads)
    summary = result.summary()
    # a finished trial never resumes; its epoch checkpoint (a full model) is only disk to reclaim
    Path(checkpoint_dir, CHECKPOINT_FILE).unlink(missing_ok=True)
    return summary


def run_trial(
    trial_id: int,
    config: dict[str, Any],
    checkpoint_dir: str,
    resume_from: str | None,
    coordinator: Any,
    workload: Workload,
    num_threads: int | None,
    tensorboard_dir: str | None = None,
    submitted_at: float | None = None,
) -> dict[str, Any]:
    """The body of a trial task, on a worker. ``submitted_at``: when the driver submitted it (``time.time()``)."""
    started = time.time()
    ctx = ray.get_runtime_context()
    node = {
        "id": ctx.get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "gpus": [str(g) for g in ray.get_gpu_ids()],
    }
    # where and in which process the trial runs, for the dashboard and fault handling; not waited for (the
    # coordinator may be busy asking the next trial), and Ray runs one caller's actor calls in order
    coordinator.started.remote(trial_id, node)

    writer = _tensorboard(tensorboard_dir, config)

    def reporter(epoch: int, metrics: Mapping[str, float]) -> str:
        values = {k: float(v) for k, v in metrics.items()}
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()
        return str(ray.get(coordinator.report.remote(trial_id, epoch, values)))

    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    if resume_from and resume_from != checkpoint_dir:
        src = Path(resume_from, CHECKPOINT_FILE)
        if src.is_file():  # a retry continues from the failed trial's last epoch
            shutil.copy2(src, Path(checkpoint_dir, CHECKPOINT_FILE))
    try:
        summary = workload(config, reporter, checkpoint_dir, num_threads=num_threads)
    finally:
        if writer is not None:
            writer.close()
        _release_gpu_memory()
    summary["node"] = node
    summary["duration_s"] = time.time() - started
    if submitted_at is not None:  # waiting for a worker and its resources (clocks of other hosts may differ)
        summary["queued_s"] = max(0.0, started - submitted_at)
    return summary


def _tensorboard(log_dir: str | None, config: dict[str, Any]) -> Any:
    """A TensorBoard writer for one trial's run directory (its config as text), or None."""
    if not log_dir:
        return None
    import json

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=log_dir)
    writer.add_text("train_config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)
    return writer


def _release_gpu_memory() -> None:
    """Return cached CUDA memory so the next trial on a shared GPU gets it (workers are reused)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# The cluster


@dataclass(frozen=True)
class RayInfo:
    address: str  # "local" when hpo started Ray itself
    started_here: bool
    cpus: float
    gpus: float
    temp_dir: str | None


def default_temp_dir() -> str:
    """Where a local Ray keeps its session files and logs (printed at start; ``HPO_RAY_TMPDIR`` moves it)."""
    return os.environ.get("HPO_RAY_TMPDIR") or str(Path(tempfile.gettempdir()) / f"hpo-ray-{os.getuid()}")


def runtime_env_for_cluster() -> dict[str, Any]:
    """Ship ``trials`` and ``hpo`` (and ``storage``) to a remote cluster's workers with the job."""
    import hpo
    import storage
    import trials

    return {"py_modules": [str(Path(m.__file__).parent) for m in (hpo, trials, storage)]}  # type: ignore[arg-type]


@contextlib.contextmanager
def ray_session(address: str | None = None, *, temp_dir: str | None = None) -> Iterator[RayInfo]:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local one; shut down what we started.

    A Ray already initialised in this process (a notebook, a test) is used as it is.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield _info("existing", False, None)
        return
    if address:
        _probe(address)
        try:
            ray.init(
                address=address,
                runtime_env=runtime_env_for_cluster(),
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... for the same thing
            from hpo.errors import ClusterError  # the driver only: workers import this module too

            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from e
        info = _info(address, True, None)
    else:
        temp_dir = temp_dir or default_temp_dir()
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        # Ray 2.60 would otherwise enable token auth and write ~/.ray/auth_token on a local start.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            _temp_dir=temp_dir,
        )
        info = _info("local", True, temp_dir)
    from hpo import watchdog

    guard = watchdog.start_for(os.getpid()) if info.address == "local" else None
    try:
        yield info
    finally:
        ray.shutdown()
        if guard is not None and guard.stdin is not None:
            guard.stdin.close()  # the watchdog stops whatever Ray left behind, then exits
            guard.wait(10)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when nothing listens at a host:port cluster address (Ray itself
    retries for minutes)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        from hpo.errors import ClusterError

        raise ClusterError(f"cannot join the Ray cluster at {address}: {e.strerror or e}") from e


def _info(address: str, started: bool, temp_dir: str | None) -> RayInfo:
    res = ray.cluster_resources()
    return RayInfo(address, started, float(res.get("CPU", 0)), float(res.get("GPU", 0)), temp_dir)


def fit_parallel(info: RayInfo, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials the cluster's resources run at once."""
    by_cpu = int(info.cpus // cpus_per_trial) if cpus_per_trial > 0 else 10**6
    by_gpu = int(info.gpus // gpus_per_trial) if gpus_per_trial > 0 else 10**6
    return max(1, min(by_cpu, by_gpu))


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
    if workload is train_workload:
        import trials.train  # noqa: F401
    return os.getpid()


#: A resource Ray gives the head node only.
HEAD_RESOURCE = "node:__internal_head__"


def start_coordinator(**kwargs: Any) -> Any:
    """The coordinator actor on the head node (the one node a cluster cannot lose and live on), taking no
    CPU a trial could use. Only it reaches the database, so workers on other nodes need no credentials.

    Returns at once, the actor not yet connected: its process starts and imports meanwhile; call its
    ``connect`` once the study exists (calls made before then wait for the process, in order)."""
    from hpo.coordinator_actor import CoordinatorActor

    on_head = any(HEAD_RESOURCE in node.get("Resources", {}) for node in ray.nodes() if node.get("Alive"))
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}
    if on_head:
        options["resources"] = {HEAD_RESOURCE: 0.001}
    return ray.remote(**options)(CoordinatorActor).remote(**kwargs)
