"""Ctrl-C: the first request stops launching; the second cancels running trials.

Only the user's requests count here (the sweep's own reasons to stop live in its ``Ledger``), and a request
takes no lock: the SIGINT handler runs on the main thread between two bytecodes of the loop, and a lock the
loop held at that moment would never be released.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from hpo.progress import Observer


class Stopper:
    def __init__(self) -> None:
        self.requests = 0
        self._announced = 0

    def request(self) -> int:
        self.requests += 1  # one bytecode-level increment on the main thread: nothing to interleave with
        return self.requests

    @property
    def draining(self) -> bool:
        return self.requests >= 1

    @property
    def cancelling(self) -> bool:
        return self.requests >= 2

    def announce(self, obs: Observer) -> None:
        """Tell the user what their Ctrl-C did (called by the loop, not by the signal handler)."""
        while self._announced < min(self.requests, 2):
            self._announced += 1
            obs.message(_SAID[self._announced])


_SAID = {
    1: "Ctrl-C: no new trials will start; running trials will finish (Ctrl-C again cancels them)",
    2: "Ctrl-C again: cancelling running trials",
}


def install_sigint(stopper: Stopper) -> Any:
    """Route Ctrl-C to ``stopper`` (main thread only); returns the previous handler, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        stopper.request()  # nothing else: printing here could re-enter a write the loop is in the middle of

    return signal.signal(signal.SIGINT, handler)
