"""Ctrl-C and SIGTERM: the first request stops launching; the second cancels running trials.

SIGTERM (``docker stop``, Kubernetes, ``kill``) is a request too, with a deadline: running trials may finish
for ``drain_timeout`` seconds, then the loop stops them and leaves them to be resumed by the next sweep.

Only the user's requests count here (the sweep's own reasons to stop live in its ``Ledger``), and a request
takes no lock: the SIGINT handler runs on the main thread between two bytecodes of the loop, and a lock the
loop held at that moment would never be released.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from hpo.progress import Observer


class Stopper:
    def __init__(self) -> None:
        self.requests = 0
        self.terminated_at: float | None = None  # time.monotonic() of the first SIGTERM
        self._announced = 0

    def request(self) -> int:
        self.requests += 1  # one bytecode-level increment on the main thread: nothing to interleave with
        return self.requests

    def terminate(self) -> int:
        """SIGTERM: a request, whose drain has a deadline (a second SIGTERM, or a Ctrl-C, cancels at once)."""
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()
        return self.request()

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
        while self._announced < min(self.requests, 2):
            self._announced += 1
            obs.message(said[self._announced].format(drain=f"{drain_timeout or 0:g}"))


_SAID = {
    1: "Ctrl-C: no new trials will start; running trials will finish (Ctrl-C again cancels them)",
    2: "Ctrl-C again: cancelling running trials",
}
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
