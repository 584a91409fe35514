"""One driver per study: a lease in the study's system attrs, taken atomically and renewed by the running sweep.

A second ``hpo sweep`` on a study whose lease is live refuses with a message naming the holder, so two
drivers never reap each other's trials or overshoot ``n_trials``. A lease is dead when its heartbeat is
older than ``TTL`` seconds, or at once when it was taken on this machine by a process that no longer
exists (so re-running right after a crash or SIGKILL needs no wait).

Taking, renewing and releasing are each a read and a write under a database-wide lock (a PostgreSQL
advisory lock keyed by the study, or a file lock for SQLite: ``storage.locks``): two sweeps started in the
same instant cannot both read "free" and both write. The decision itself (``is_live``) is pure.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from hpo.procs import is_running, start_time
from storage.locks import LEASE_LOCK_BASE, exclusive

KEY = "hpo:driver"
TTL = 30.0  # seconds without a heartbeat after which another driver may take over
HEARTBEAT = 5.0  # how often a running sweep renews its lease

Lease = dict[str, Any]


def new_lease(owner: str | None = None, now: float | None = None) -> Lease:
    pid = os.getpid()
    return {
        "owner": owner or uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": start_time(pid),
        "heartbeat": time.time() if now is None else now,
    }


def is_live(
    lease: Mapping[str, Any] | None,
    *,
    now: float,
    host: str,
    ttl: float = TTL,
) -> bool:
    """Whether ``lease`` still holds the study: heartbeat within ``ttl``, and, on this host, its process alive."""
    if not lease or not isinstance(lease, Mapping):
        return False
    if now - float(lease.get("heartbeat", 0)) > ttl:
        return False
    if lease.get("host") == host and isinstance(lease.get("pid"), int) and lease.get("pid_start") is not None:
        return is_running(int(lease["pid"]), float(lease["pid_start"]))
    return True


def describe(lease: Mapping[str, Any], now: float) -> str:
    age = max(0.0, now - float(lease.get("heartbeat", now)))
    return f"host {lease.get('host')}, pid {lease.get('pid')}, last heartbeat {age:.0f}s ago"


def read(storage: Any, study_id: int) -> Lease | None:
    value = storage.get_study_system_attrs(study_id).get(KEY)
    return dict(value) if isinstance(value, Mapping) else None


def write(storage: Any, study_id: int, lease: Mapping[str, Any] | None) -> None:
    storage.set_study_system_attr(study_id, KEY, dict(lease) if lease else None)


def _swap(
    url: str, storage: Any, study_id: int, refuse: Callable[[Lease | None], bool], new: Lease | None
) -> Lease | None:
    """Under the study's lock: read the lease; unless ``refuse(held)``, write ``new``. Returns what was held."""
    with exclusive(url, LEASE_LOCK_BASE + study_id):
        held = read(storage, study_id)
        if not refuse(held):
            write(storage, study_id, new)
        return held


def acquire(url: str, storage: Any, study_id: int, mine: Lease) -> Lease | None:
    """Take the study's lease for ``mine`` unless another live sweep holds it; returns that holder's lease
    (and writes nothing) when it does, None once the lease is ours."""

    def live_other(held: Lease | None) -> bool:
        return bool(held) and not _ours(held, mine) and is_live(held, now=time.time(), host=socket.gethostname())

    held = _swap(url, storage, study_id, live_other, {**mine, "heartbeat": time.time()})
    return held if live_other(held) else None


def renew(url: str, storage: Any, study_id: int, mine: Lease) -> bool:
    """Renew our lease's heartbeat; False (and nothing written) when another sweep has taken it."""

    def other(held: Lease | None) -> bool:
        return bool(held) and not _ours(held, mine)

    return not other(_swap(url, storage, study_id, other, {**mine, "heartbeat": time.time()}))


def release(url: str, storage: Any, study_id: int, owner: str) -> bool:
    """Give the lease up if ``owner`` holds it. True: it is no longer ours (released, or taken over)."""
    _swap(url, storage, study_id, lambda held: not held or held.get("owner") != owner, None)
    return True


def _ours(held: Lease | None, mine: Lease) -> bool:
    return bool(held) and held.get("owner") == mine["owner"]  # type: ignore[union-attr]
