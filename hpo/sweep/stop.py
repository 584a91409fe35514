"""Ctrl-C, SIGTERM and ``hpo stop``: the first request stops launching; the second cancels running trials.

SIGTERM (``docker stop``, Kubernetes, ``kill``) is a request too, with a deadline: running trials may finish
for ``drain_timeout`` seconds, then the loop stops them and leaves them to be resumed by the next sweep.

Only the user's requests count here (the sweep's own reasons to stop live in its ``Ledger``), and a request
takes no lock: the SIGINT handler runs on the main thread between two bytecodes of the loop, and a lock the
loop held at that moment would never be released.

``hpo stop`` (another shell, maybe another machine) is a request like a first Ctrl-C: it writes ``STOP_KEY`` into
the study's system attrs, naming the owner of the live sweep's lease (``request_stop``); the sweep's coordinator
reads it at the lease's heartbeat (every ``hpo.sweep.lease.HEARTBEAT`` seconds) and the loop hands it to
``Stopper.remote_request``. A request names one sweep: a later sweep (another lease owner) ignores it, and clears it
at its first poll.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo.progress import Observer

#: The study system attr ``hpo stop`` writes: {"owner": the lease owner it stops, "requested_at": the database's
#: time, "host", "pid", "user": who asked}. Null or absent: no request.
STOP_KEY = "hpo:stop_requested"


class Stopper:
    def __init__(self) -> None:
        self.requests = 0
        self.terminated_at: float | None = None  # time.monotonic() of the first SIGTERM
        self.remote: dict[str, Any] | None = None  # the ``hpo stop`` request that stopped the sweep, if one did
        self._announced = 0

    def request(self) -> int:
        self.requests += 1  # one bytecode-level increment on the main thread: nothing to interleave with
        return self.requests

    def terminate(self) -> int:
        """SIGTERM: a request, whose drain has a deadline (a second SIGTERM, or a Ctrl-C, cancels at once)."""
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()
        return self.request()

    def remote_request(self, request: Mapping[str, Any]) -> None:
        """``hpo stop`` from another shell: as a first Ctrl-C (no new trials; running ones finish). A sweep that
        is already stopping keeps going as it was."""
        if self.requests == 0:
            self.remote = dict(request)
            self.request()

    @property
    def terminating(self) -> bool:
        return self.terminated_at is not None

    def drained(self, drain_timeout: float) -> bool:
        """A SIGTERM came ``drain_timeout`` seconds ago or more: stop what still runs."""
        return self.terminated_at is not None and time.monotonic() - self.terminated_at >= drain_timeout

    @property
    def draining(self) -> bool:
        return self.requests >= 1

    @property
    def cancelling(self) -> bool:
        return self.requests >= 2

    def announce(self, obs: Observer, drain_timeout: float | None = None) -> None:
        """Tell the user what their Ctrl-C or SIGTERM did (called by the loop, not by the signal handler)."""
        said = _SAID_TERM if self.terminating else _SAID
        if self.remote is not None and self._announced == 0 and self.requests == 1 and not self.terminating:
            self._announced = 1
            obs.message(_SAID_REMOTE.format(who=describe_request(self.remote)))
        while self._announced < min(self.requests, 2):
            self._announced += 1
            obs.message(said[self._announced].format(drain=f"{drain_timeout or 0:g}"))


_SAID = {
    1: "Ctrl-C: no new trials will start; running trials will finish (Ctrl-C again cancels them)",
    2: "Ctrl-C again: cancelling running trials",
}
_SAID_REMOTE = (
    "stop requested from another shell ({who}): no new trials will start; running trials will finish "
    "(Ctrl-C here cancels them)"
)
_SAID_TERM = {
    1: "SIGTERM: no new trials will start; running trials may finish for drain_timeout={drain}s, then they are "
    "stopped and the next sweep resumes them from their checkpoints",
    2: "stopping running trials now; the next sweep resumes them from their checkpoints",
}


def install_sigint(stopper: Stopper) -> Any:
    """Route Ctrl-C to ``stopper`` (main thread only); returns the previous handler, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        stopper.request()  # nothing else: printing here could re-enter a write the loop is in the middle of

    return signal.signal(signal.SIGINT, handler)


def install_sigterm(stopper: Stopper) -> Any:
    """Route SIGTERM to ``stopper`` (main thread only); returns the previous handler, or None.

    Call it after ``ray.init``: Ray's core worker installs a C++ failure-signal handler for SIGTERM in the driver
    that prints a "*** SIGTERM received" stack trace and aborts (exit 134); ``signal.signal`` replaces it."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        stopper.terminate()

    return signal.signal(signal.SIGTERM, handler)


def describe_request(request: Mapping[str, Any]) -> str:
    """Who asked, for the sweep's line: ``hpo stop by alice on host-1 (pid 42)``."""
    return f"hpo stop by {request.get('user') or '?'} on {request.get('host') or '?'} (pid {request.get('pid')})"


def is_request_for(value: Any, owner: str | None) -> bool:
    """Whether the stored ``STOP_KEY`` value is a request to the sweep whose lease ``owner`` holds."""
    return isinstance(value, Mapping) and owner is not None and value.get("owner") == owner


@dataclass(frozen=True)
class StopRequested:
    """What ``hpo stop`` did: ``holder`` is the live sweep's lease (None: no sweep runs the study, nothing
    written)."""

    study: str
    holder: dict[str, Any] | None

    def describe(self) -> str:
        if self.holder is None:
            return f"no hpo sweep is running study {self.study!r}; nothing to stop"
        h = self.holder
        return (
            f"asked the sweep on study {self.study!r} (host {h.get('host')}, pid {h.get('pid')}) to stop: it starts "
            f"no new trials and exits once its running trials finish (it looks every few seconds)"
        )


def request_stop(url: str, study_name: str) -> StopRequested:
    """``hpo stop``: write a stop request naming the live sweep of ``study_name`` (its lease's owner) into the
    study; nothing is written when no sweep holds the study. ``StudyNotFoundError`` for an unknown study."""
    from hpo import study as studies
    from hpo.sweep import lease
    from storage import opened

    with opened(url, create_schema=False, check_version=False) as storage:
        study_id = studies.load(storage, study_name)._study_id
        held, now = lease.peek(storage, study_id)
        if not held or not lease.is_live(held, now=now, host=lease.here()):
            return StopRequested(study_name, None)
        request = {
            "owner": held.get("owner"),
            "requested_at": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": _user(),
        }
        storage.set_study_system_attr(study_id, STOP_KEY, request)
    return StopRequested(study_name, held)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry): the request names no user
        return None
