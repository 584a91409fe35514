"""Stop the rest of a local Ray when the driver that started it dies without shutting it down.

Ray ties its head processes to the driver, and trial workers die within seconds of it, but on a
SIGKILLed driver Ray 2.60 leaves its dashboard and runtime-env agents running for good. ``hpo sweep``
(and ``hpo verify``) start this watchdog right after ``ray.init`` over the processes that Ray started (the
driver's children that name Ray's session folder, and their descendants: ``hpo.procs.started_with``), never
over the driver's other children: ``hpo.run_sweep`` is public API, and a notebook's own subprocesses are
not Ray's. It waits for its stdin to close (the driver exited, however it exited), then stops those still
alive with what they have started since (the workers the raylet started later). Processes are named by pid
and start time (``hpo.procs``, on psutil), so a pid the system has since given to another process is left
alone.

Run as ``python -m hpo.cluster.watchdog PID:START,PID:START,...``; it imports nothing heavier than psutil.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from hpo import procs

Proc = tuple[int, float]  # (pid, start time), as hpo.procs gives them


def start_for(found: Sequence[Proc]) -> subprocess.Popen[bytes]:
    """Start a watchdog over the processes ``found`` (e.g. ``procs.started_with(driver_pid, session_dir)``).
    Closing its stdin (or the driver dying) makes it stop those still running, then exit."""
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cluster.watchdog", format_procs(found)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal must not stop it before it has cleaned up
    )


def format_procs(found: Sequence[Proc]) -> str:
    """The watchdog's argument: ``pid:start`` pairs, comma-separated (``repr`` keeps the float exact)."""
    return ",".join(f"{pid}:{start!r}" for pid, start in found)


def parse_procs(arg: str) -> list[Proc]:
    """The inverse of ``format_procs``."""
    out = []
    for item in filter(None, arg.split(",")):
        pid, start = item.split(":")
        out.append((int(pid), float(start)))
    return out


def with_descendants(found: Sequence[Proc]) -> list[Proc]:
    """``found`` and what those still running (same pid and start time) have started since, once each."""
    seen = {pid for pid, _ in found}
    out = list(found)
    for pid, start in found:
        if procs.is_running(pid, start):
            for child in procs.descendants(pid):
                if child[0] not in seen:
                    seen.add(child[0])
                    out.append(child)
    return out


def stop(found: Sequence[Proc], grace: float = 3.0) -> list[int]:
    """SIGTERM the processes still running (same pid and start time) and what they have started since,
    SIGKILL those left after ``grace`` seconds; the pids that were still running."""
    alive = [(pid, start) for pid, start in with_descendants(found) if procs.terminate(pid, start)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(procs.is_running(pid, start) for pid, start in alive):
        time.sleep(0.1)
    for pid, start in alive:
        procs.terminate(pid, start, force=True)  # does nothing to one that has stopped
    return [pid for pid, _ in alive]


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    found = parse_procs(argv[0]) if argv else []
    sys.stdin.buffer.read()  # returns when the driver closes the pipe or dies
    stop(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
