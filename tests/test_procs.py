"""``hpo.procs`` and the Ray watchdog built on it, against real process trees (bash and sleep), no mocks.

The trees print their own pids (``$!``), so what ``descendants`` finds is checked against what the shell
started, not against psutil again. POSIX (bash, sleep, signals); psutil itself also runs on Windows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import IO

import pytest

from hpo import procs
from hpo.cluster import watchdog
from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(
        sys.platform == "win32" or not (shutil.which("bash") and shutil.which("sleep")),
        reason="needs POSIX signals, bash and sleep",
    ),
    pytest.mark.timeout(60),
]

#: bash starting a sleep and a bash that starts a sleep of its own; it prints "<name> <pid>" for each.
TREE = 'sleep 30 & echo sleep $!; bash -c "sleep 30 & echo inner-sleep \\$!; wait" & echo bash $!; wait'


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.05)


def kill_quietly(pids: list[int]) -> None:
    """End what a test started (the pids it read from its own trees), if a failed assertion left it running."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def read_tree(out: IO[str]) -> dict[str, int]:
    """The pids a ``TREE`` printed, by name."""
    return {name: int(pid) for name, pid in (out.readline().split() for _ in range(3))}


Tree = tuple[subprocess.Popen[str], dict[str, int]]


@pytest.fixture
def tree() -> Iterator[Tree]:
    """A running ``bash -c TREE`` and the pids of its three descendants."""
    root = subprocess.Popen(["bash", "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    pids = read_tree(root.stdout)
    try:
        yield root, pids
    finally:
        kill_quietly([*pids.values(), root.pid])
        root.wait(10)
        root.stdout.close()


def test_descendants_are_the_tree_the_shell_started(tree: Tree) -> None:
    root, pids = tree
    found = dict(procs.descendants(root.pid))
    assert found.keys() == set(pids.values())  # children and grandchildren
    for pid, start in found.items():
        assert start == procs.start_time(pid)
        assert procs.is_running(pid) and procs.is_running(pid, start)
    assert procs.descendants(pids["bash"]) == [(pids["inner-sleep"], found[pids["inner-sleep"]])]
    assert procs.descendants(pids["sleep"]) == []
    # and from further up: this test process sees the root and everything under it
    assert {root.pid, *pids.values()} <= dict(procs.descendants(os.getpid())).keys()


#: bash starting a marked bash (its ``$0`` names the marker) that starts a sleep, and an unmarked sleep beside it.
MARKED = (
    'bash -c "sleep 30 & echo inner-sleep \\$!; wait" hpo-marker-1 & echo marked $!; sleep 30 & echo other $!; wait'
)


def test_started_with_is_the_marked_children_and_their_trees_only() -> None:
    """Bug 7 (issue 18): the watchdog took every descendant of the driver, the caller's own children too."""
    root = subprocess.Popen(["bash", "-c", MARKED], stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    pids = {name: int(pid) for name, pid in (root.stdout.readline().split() for _ in range(3))}
    try:
        found = dict(procs.started_with(root.pid, "hpo-marker-1"))
        assert found.keys() == {pids["marked"], pids["inner-sleep"]}  # not the unmarked sleep beside them
        assert all(procs.is_running(pid, start) for pid, start in found.items())
        assert procs.started_with(root.pid, "no-such-marker") == []
        assert procs.started_with(root.pid, "") == []
    finally:
        kill_quietly([*pids.values(), root.pid])
        root.wait(10)
        root.stdout.close()


def test_stop_also_stops_what_a_recorded_process_started_since(tree: Tree) -> None:
    """The raylet starts workers after the watchdog recorded it: they are stopped with it."""
    _, named = tree
    start = procs.start_time(named["bash"])
    assert start is not None
    stopped = watchdog.stop([(named["bash"], start)], grace=2.0)  # recorded: the inner bash alone
    assert set(stopped) == {named["bash"], named["inner-sleep"]}
    wait_until(lambda: not procs.is_running(named["inner-sleep"]))
    assert procs.is_running(named["sleep"])  # neither recorded nor started by what was


def test_start_time_of_a_live_process_then_a_zombie_then_a_reaped_one() -> None:
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    after = time.time()
    try:
        start = procs.start_time(child.pid)
        assert start is not None
        assert before - 1.5 <= start <= after + 1.5  # ticks since boot plus a boot time in whole seconds
        assert procs.start_time(child.pid) == start  # stable between reads
        assert procs.is_running(child.pid, start)
        assert not procs.is_running(child.pid, start - 30)  # the same pid, started at another time: not it
        assert not procs.is_running(child.pid, start + 30)

        child.kill()
        wait_until(lambda: procs.start_time(child.pid) is None)
        assert child.returncode is None  # dead but not reaped (nothing here waited for it): a zombie
        assert not procs.is_running(child.pid) and not procs.is_running(child.pid, start)
        assert procs.descendants(child.pid) == []
    finally:
        child.kill()
        child.wait(10)
    assert procs.start_time(child.pid) is None  # reaped
    assert not procs.is_running(child.pid, start)


@pytest.mark.parametrize("pid", [0, -1, -os.getpid()], ids=["zero", "minus-one", "own-group"])
def test_no_pid_names_a_process_group(pid: int) -> None:
    assert procs.start_time(pid) is None
    assert not procs.is_running(pid)
    assert procs.descendants(pid) == []
    assert not procs.terminate(pid, time.time(), force=True)


def test_terminate_only_the_process_that_started_then() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = procs.start_time(child.pid)
        assert start is not None
        assert not procs.terminate(child.pid, start - 60)  # a pid reused since: left alone
        assert not procs.terminate(child.pid, start + 60, force=True)
        time.sleep(0.2)
        assert child.poll() is None
        assert procs.terminate(child.pid, start)
        assert child.wait(10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait(10)


def test_watchdog_arguments_round_trip() -> None:
    found = [(12, 1732870000.123456789), (345, 1.0), (6, 1732870012.01)]
    assert watchdog.parse_procs(watchdog.format_procs(found)) == found
    assert watchdog.parse_procs("") == []


def test_stop_escalates_to_sigkill_and_spares_reused_pids() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
        start = procs.start_time(stubborn.pid)
        other_start = procs.start_time(other.pid)
        assert start is not None and other_start is not None
        assert watchdog.stop([(stubborn.pid, start), (other.pid, other_start - 60)], grace=0.5) == [stubborn.pid]
        assert stubborn.wait(10) == -signal.SIGKILL
        assert other.poll() is None  # not the process recorded: untouched
    finally:
        for p in (stubborn, other):
            p.kill()
            p.wait(10)
        if stubborn.stdout is not None:
            stubborn.stdout.close()


def test_watchdog_stops_the_tree_when_its_stdin_closes(tree: Tree) -> None:
    root, named = tree
    pids = list(named.values())
    guard = watchdog.start_for(procs.descendants(root.pid))  # the bash stands in for the driver
    try:
        time.sleep(0.5)  # the watchdog is waiting on its stdin: nothing is stopped yet
        assert all(procs.is_running(pid) for pid in pids)
        assert guard.poll() is None
        assert guard.stdin is not None
        guard.stdin.close()
        wait_until(lambda: not any(procs.is_running(pid) for pid in pids), timeout=5)
        assert guard.wait(5) == 0
        assert root.wait(5) is not None  # its children gone, the bash's `wait` returned
    finally:
        guard.kill()
        guard.wait(10)


DRIVER = textwrap.dedent(
    f"""
    import os, subprocess, time
    from hpo import procs
    from hpo.cluster import watchdog

    tree = subprocess.Popen(["bash", "-c", {TREE!r}], stdout=subprocess.PIPE, text=True)
    pids = [int(tree.stdout.readline().split()[1]) for _ in range(3)]
    guard = watchdog.start_for(procs.descendants(os.getpid()))
    print(tree.pid, *pids, guard.pid, flush=True)
    time.sleep(60)
    """
)


def test_watchdog_stops_the_tree_of_a_sigkilled_driver() -> None:
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=REPO)
    started: list[int] = []
    try:
        assert driver.stdout is not None
        *started, guard = (int(x) for x in driver.stdout.readline().split())
        assert len(started) == 4 and all(procs.is_running(pid) for pid in started)
        assert procs.is_running(guard)
        driver.kill()  # no cleanup of its own: only the watchdog can stop the tree now
        driver.wait(10)
        wait_until(lambda: not any(procs.is_running(pid) for pid in (*started, guard)), timeout=8)
    finally:
        kill_quietly(started)
        driver.kill()
        driver.wait(10)
        if driver.stdout is not None:
            driver.stdout.close()
