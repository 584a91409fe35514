"""Start or join the Ray cluster a sweep runs on, and size the sweep to it. Driver side only."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from hpo.errors import ClusterError, ConfigError


@dataclass(frozen=True)
class RayInfo:
    address: str  # "local" when hpo started Ray itself
    started_here: bool
    cpus: float
    gpus: float
    temp_dir: str | None
    #: CPUs and GPUs of the GPU node with the fewest CPUs per GPU (None: the cluster's totals stand for it)
    gpu_node: tuple[float, float] | None = None

    def cpus_per_gpu(self) -> tuple[float, float, float] | None:
        """A GPU node's CPUs per GPU, with the CPUs and GPUs it is from; None without GPUs."""
        cpus, gpus = self.gpu_node or (self.cpus, self.gpus)
        return (cpus / gpus, cpus, gpus) if gpus > 0 else None

    def describe(self) -> str:
        if self.temp_dir:
            return f"local Ray ({self.cpus:g} CPUs, {self.gpus:g} GPUs; logs in {self.temp_dir})"
        return f"Ray at {self.address} ({self.cpus:g} CPUs, {self.gpus:g} GPUs)"


def is_remote_address(address: str | None) -> bool:
    """Whether the Ray cluster at ``address`` may have its head on another machine: anything but a local
    Ray (none, ``local``), ``auto`` (this machine is a node) or a loopback host."""
    if not address or address in ("local", "auto"):
        return False
    target = address.removeprefix("ray://")
    host = (target.rpartition(":")[0] or target).strip("[]")
    return host not in ("localhost", "::1") and not host.startswith("127.")


def refuse_sqlite_on_remote(storage_url: str, address: str | None) -> None:
    """``ConfigError`` for a SQLite storage with a remote Ray: the coordinator runs on the cluster's head node
    and would open a SQLite file of its own there, not the one this machine reads."""
    if storage_url.startswith("sqlite") and is_remote_address(address):
        raise ConfigError(
            f"storage {storage_url} is a SQLite file, which the Ray cluster at {address} cannot share (its head "
            "node would open another file of that name); use PostgreSQL with a remote Ray "
            "(--storage postgresql+psycopg2://user@host/db, or $HPO_STORAGE)"
        )


def default_temp_dir() -> str:
    """Where a local Ray keeps its session files and logs (printed at start; ``HPO_RAY_TMPDIR`` moves it)."""
    return os.environ.get("HPO_RAY_TMPDIR") or str(Path(tempfile.gettempdir()) / f"hpo-ray-{os.getuid()}")


def runtime_env_for_cluster() -> dict[str, Any]:
    """Ship ``trials`` and ``hpo`` (and ``storage``) to a remote cluster's workers with the job."""
    import hpo
    import storage
    import trials

    return {"py_modules": [str(Path(m.__file__).parent) for m in (hpo, trials, storage)]}  # type: ignore[arg-type]


def local_init_options(temp_dir: str) -> dict[str, Any]:
    """``ray.init`` options for a local Ray. No ``num_cpus``: Ray counts the CPUs this process may use
    (cgroup quotas included), where ``os.cpu_count()`` would count the host's and oversubscribe a container."""
    return {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "_temp_dir": temp_dir,
    }


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
        _join(address)
        info = _info(address, True, None)
    else:
        temp_dir = temp_dir or default_temp_dir()
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        # Ray 2.60 would otherwise enable token auth and write ~/.ray/auth_token on a local start.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(**local_init_options(temp_dir))
        info = _info("local", True, temp_dir)
    guard = _watch(info)
    try:
        yield info
    finally:
        ray.shutdown()
        if guard is not None and guard.stdin is not None:
            guard.stdin.close()  # the watchdog stops whatever Ray left behind, then exits
            guard.wait(10)


def _watch(info: RayInfo) -> subprocess.Popen[bytes] | None:
    """A watchdog over the processes the local Ray just started (``hpo.cluster.watchdog``): the driver's
    children that name Ray's session folder, with their descendants; never the caller's own children."""
    if info.address != "local" or info.temp_dir is None:
        return None
    from hpo import procs
    from hpo.cluster import watchdog

    return watchdog.start_for(procs.started_with(os.getpid(), _session_dir(info.temp_dir)))


def _session_dir(temp_dir: str) -> str:
    """The local Ray's session folder (``<temp_dir>/session_<time>_<pid>``), which every process Ray starts
    names on its command line; ``temp_dir`` itself (named by them too) where Ray does not say."""
    try:  # Ray's own record (private in Ray 2.60): the folder of this session, not of another on temp_dir
        node: Any = ray._private.worker._global_node
        found = node.get_session_dir_path()
    except AttributeError:
        found = None
    return str(found) if found else temp_dir


def _join(address: str) -> None:
    _probe(address)
    try:
        ray.init(
            address=address,
            runtime_env=runtime_env_for_cluster(),
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... for the same thing
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from e


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
        raise ClusterError(f"cannot join the Ray cluster at {address}: {e.strerror or e}") from e


def _info(address: str, started: bool, temp_dir: str | None) -> RayInfo:
    res = ray.cluster_resources()
    return RayInfo(address, started, float(res.get("CPU", 0)), float(res.get("GPU", 0)), temp_dir, _gpu_node())


def _gpu_node() -> tuple[float, float] | None:
    """(CPUs, GPUs) of the live GPU node with the fewest CPUs per GPU: what a trial with GPUs can count on."""
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
    pairs = [(float(r.get("CPU", 0)), float(r["GPU"])) for r in nodes if r.get("GPU", 0) > 0]
    return min(pairs, key=lambda p: p[0] / p[1], default=None)


def fit_parallel(info: RayInfo, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials the cluster's resources run at once."""
    by_cpu = int(info.cpus // cpus_per_trial) if cpus_per_trial > 0 else 10**6
    by_gpu = int(info.gpus // gpus_per_trial) if gpus_per_trial > 0 else 10**6
    return max(1, min(by_cpu, by_gpu))
