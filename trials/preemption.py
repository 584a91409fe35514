"""A SIGTERM (spot preemption, ``docker stop``, a node shutting down) checkpoints the running trial before it goes.

Inside ``checkpoint_on_sigterm()`` a SIGTERM only sets a flag; ``fit`` asks ``requested()`` after every training
step, and when it is set saves a checkpoint of the run as it is, mid-epoch (``trials.train``), and raises
``Preempted``. The caller then lets the process end as the signal meant it to (``terminate``), so the trial's
retry resumes from that checkpoint and loses at most the batch in flight. Only the main thread can install a
signal handler; elsewhere the context does nothing and a SIGTERM acts as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from trials.errors import TrialsError

_requested = threading.Event()


class Preempted(TrialsError):
    """The run was asked to stop by a SIGTERM; its checkpoint (if it has a folder) was saved first."""


def requested() -> bool:
    """Whether a SIGTERM arrived inside ``checkpoint_on_sigterm``."""
    return _requested.is_set()


def _flag(signum: int, frame: FrameType | None) -> None:
    _requested.set()


@contextlib.contextmanager
def checkpoint_on_sigterm() -> Iterator[Any]:
    """While inside, a SIGTERM sets the flag ``requested()`` reads instead of ending the process. Yields the
    handler it replaced (restored on exit), for ``terminate``."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield signal.SIG_DFL
        return
    previous = signal.signal(signal.SIGTERM, _flag)
    try:
        yield previous
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested.clear()


def terminate(previous: Any) -> None:
    """End as the SIGTERM would have without ``checkpoint_on_sigterm``: the handler it replaced runs (Ray's
    raises SystemExit, so Ray sees its worker exit), or the default action ends the process."""
    if callable(previous):
        previous(signal.SIGTERM, None)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
