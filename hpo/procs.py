"""Processes by pid, through psutil: when one started, what it started, whether it still runs.

A pid alone does not name a process for long: the kernel hands it to a new process once the old one
is gone. So a process is named by ``(pid, start time)``, recorded while it runs and checked before
trusting or signalling it later (the sweep's lease, the Ray watchdog). Start times are psutil's
``create_time()``: seconds since the epoch, as a float, on every platform psutil supports.

Cheap to import (psutil only): ``python -m hpo.cluster.watchdog`` loads it.
"""

from __future__ import annotations

import psutil

#: How far apart two readings of one process's start time may be. On Linux psutil adds the boot time
#: (whole seconds, which the kernel derives again from the wall clock on each read) to the ticks since
#: boot, so a reading may move by a second; a pid reused by a process started within that second of
#: the one recorded is not a practical risk.
SAME_START = 1.0


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is no such process, it
    is a zombie, or this user may not inspect it."""
    if pid <= 0:  # 0 and negative pids name process groups to os.kill, never one process
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc.create_time()
    except psutil.Error:  # NoSuchProcess, ZombieProcess, AccessDenied
        return None


def same_start(a: float, b: float) -> bool:
    """Whether two start times read for one pid name the same process (see ``SAME_START``)."""
    return abs(a - b) <= SAME_START


def is_running(pid: int, start: float | None = None) -> bool:
    """Whether process ``pid`` is alive and not a zombie, and, when ``start`` is given, is still the
    process that started then (not a later one given the same pid)."""
    now = start_time(pid)
    return now is not None and (start is None or same_start(now, start))


def descendants(pid: int) -> list[tuple[int, float]]:
    """Every live descendant of process ``pid`` (children, their children, ...) as ``(pid, start time)``;
    empty if ``pid`` is gone. Zombies, and processes that end while being listed, are left out."""
    if pid <= 0:
        return []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        start = start_time(child.pid)
        if start is not None:
            found.append((child.pid, start))
    return found


def started_with(pid: int, marker: str) -> list[tuple[int, float]]:
    """The children of process ``pid`` whose command line names ``marker``, and all their descendants, as
    ``(pid, start time)``: what one call of ``pid`` started (a local Ray names its session folder on the
    command line of every process it starts), not the other children ``pid`` has (a notebook's own
    subprocesses). Processes this user may not inspect, zombies and processes that end while being listed
    are left out."""
    if pid <= 0 or not marker:
        return []
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            named = any(marker in arg for arg in child.cmdline())
        except psutil.Error:
            continue
        start = start_time(child.pid) if named else None
        if start is not None:
            found.append((child.pid, start))
            found.extend(descendants(child.pid))
    return found


def terminate(pid: int, start: float, *, force: bool = False) -> bool:
    """Ask process ``pid`` to stop (SIGTERM; SIGKILL with ``force``; TerminateProcess on Windows either
    way) if it is still the one that started at ``start``. True if it was signalled."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or not same_start(proc.create_time(), start):
            return False
        if force:
            proc.kill()
        else:
            proc.terminate()
    except psutil.Error:
        return False
    return True
