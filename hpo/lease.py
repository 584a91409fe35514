"""One driver per study: a lease in the study's system attrs, renewed by the running sweep.

A second ``hpo sweep`` on a study whose lease is live refuses with a message naming the holder, so two
drivers never reap each other's trials or overshoot ``n_trials``. A lease is dead when its heartbeat is
older than ``TTL`` seconds, or at once when it was taken on this machine by a process that no longer
exists (so re-running right after a crash or SIGKILL needs no wait). The decision is pure; reading and
writing go through an Optuna storage.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

KEY = "hpo:driver"
TTL = 30.0  # seconds without a heartbeat after which another driver may take over
HEARTBEAT = 5.0  # how often a running sweep renews its lease


def process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, or None if there is none (or no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def new_lease(owner: str | None = None, now: float | None = None) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "owner": owner or uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start(pid),
        "heartbeat": time.time() if now is None else now,
    }


def is_live(
    lease: Mapping[str, Any] | None,
    *,
    now: float,
    host: str,
    started: Callable[[int], int | None] = process_start,
    ttl: float = TTL,
) -> bool:
    """Whether ``lease`` still holds the study: heartbeat within ``ttl``, and, on this host, its process alive."""
    if not lease or not isinstance(lease, Mapping):
        return False
    if now - float(lease.get("heartbeat", 0)) > ttl:
        return False
    if lease.get("host") == host and isinstance(lease.get("pid"), int) and lease.get("pid_start") is not None:
        return started(int(lease["pid"])) == lease["pid_start"]
    return True


def describe(lease: Mapping[str, Any], now: float) -> str:
    age = max(0.0, now - float(lease.get("heartbeat", now)))
    return f"host {lease.get('host')}, pid {lease.get('pid')}, last heartbeat {age:.0f}s ago"


def read(storage: Any, study_id: int) -> dict[str, Any] | None:
    value = storage.get_study_system_attrs(study_id).get(KEY)
    return dict(value) if isinstance(value, Mapping) else None


def write(storage: Any, study_id: int, lease: Mapping[str, Any] | None) -> None:
    storage.set_study_system_attr(study_id, KEY, dict(lease) if lease else None)
