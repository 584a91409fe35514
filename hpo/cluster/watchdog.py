"""Stop the rest of a local Ray when the driver that started it dies without shutting it down.

Ray ties its head processes to the driver, and trial workers die within seconds of it, but on a
SIGKILLed driver Ray 2.60 leaves its dashboard and runtime-env agents running for good. ``hpo sweep``
starts this watchdog right after ``ray.init``: it records the processes the driver started, waits
for its stdin to close (the driver exited, however it exited), then stops those still alive.
Processes are named by pid and start time (``hpo.procs``, on psutil), so a pid the system has since
given to another process is left alone.

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


def start_for(driver_pid: int) -> subprocess.Popen[bytes]:
    """Start a watchdog over the processes ``driver_pid`` has started so far. Closing its stdin (or the
    driver dying) makes it stop those still running, then exit."""
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cluster.watchdog", format_procs(procs.descendants(driver_pid))],
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


def stop(found: Sequence[Proc], grace: float = 3.0) -> list[int]:
    """SIGTERM the processes still running (same pid and start time), SIGKILL those left after ``grace``
    seconds; the pids that were still running."""
    alive = [(pid, start) for pid, start in found if procs.terminate(pid, start)]
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
