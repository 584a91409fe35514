"""Stop the rest of a local Ray when the driver that started it dies without shutting it down.

Ray ties its head processes to the driver, and trial workers die within seconds of it, but on a
SIGKILLed driver Ray 2.60 leaves its dashboard and runtime-env agents running for good. ``hpo sweep``
starts this watchdog right after ``ray.init``: it records the processes the driver started, waits
for its stdin to close (the driver exited, however it exited), then stops those still alive.
Linux only (``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[tuple[int, int]]:
    """Every live descendant of ``root`` as (pid, start time)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append((int(entry.name), st[1]))
    out: list[tuple[int, int]] = []
    stack = [root]
    while stack:
        for pid, start in children.get(stack.pop(), []):
            out.append((pid, start))
            stack.append(pid)
    return out


def start_for(driver_pid: int) -> subprocess.Popen[bytes] | None:
    """Start a watchdog over the processes ``driver_pid`` has started so far; None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    procs = [p for p in descendants(driver_pid)]
    arg = ",".join(f"{pid}:{start}" for pid, start in procs)
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.watchdog", arg],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal must not stop it before it has cleaned up
    )


def stop(procs: list[tuple[int, int]], grace: float = 3.0) -> list[int]:
    """SIGTERM the processes still alive (same pid and start time), SIGKILL them after ``grace``."""
    alive = [pid for pid, start in procs if (_stat(pid) or (0, -1))[1] == start]
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in alive):
        time.sleep(0.1)
    for pid in alive:
        if _running(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return alive


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    procs = [(int(p), int(s)) for p, s in (x.split(":") for x in argv[0].split(",") if x)] if argv else []
    sys.stdin.buffer.read()  # returns when the driver closes the pipe or dies
    stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
