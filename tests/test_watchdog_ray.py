"""The clean-up watchdog of a local Ray stops Ray's processes, never the caller's own (bug 7 of issue 18).

``hpo.run_sweep`` and ``hpo.verify_file`` are public API: a notebook may have started processes of its own
before calling them. A real driver process starts a ``sleep`` of its own, then opens hpo's Ray session
(``hpo.cluster.session.ray_session``: a real local Ray and the real watchdog) and leaves it, by a normal exit
or by SIGKILL. Afterwards the caller's ``sleep`` still runs, and every process Ray started is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable

import pytest

from hpo import procs
from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32" or not shutil.which("sleep"), reason="needs POSIX signals and sleep"),
    pytest.mark.timeout(180),
]

DRIVER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys
    import psutil
    from hpo.cluster.session import ray_session

    mine = subprocess.Popen(["sleep", "600"])  # the caller's own child, started before hpo is called
    with ray_session(temp_dir=sys.argv[1]):
        me = psutil.Process()
        # the watchdog is the one child that is neither the caller's nor Ray's (which name Ray's folder)
        guard = [c.pid for c in me.children() if c.pid != mine.pid and sys.argv[1] not in " ".join(c.cmdline())]
        assert len(guard) == 1, [(c.pid, c.status(), c.cmdline()) for c in me.children()]
        ray_procs = [
            (c.pid, c.create_time()) for c in me.children(recursive=True) if c.pid not in (mine.pid, guard[0])
        ]
        mine_start = psutil.Process(mine.pid).create_time()
        print(json.dumps({"mine": [mine.pid, mine_start], "guard": guard[0], "ray": ray_procs}), flush=True)
        if sys.argv[2] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of its own: only the watchdog stops Ray now
    """
)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.1)


# the normal exit is the public API's case (a notebook goes on after run_sweep); a SIGKILLed driver is slow
# too (a Ray start each), and test_procs covers the watchdog of a SIGKILLed driver on a small process tree
@pytest.mark.parametrize("leave", ["exit", pytest.param("sigkill", marks=pytest.mark.slow)])
def test_the_watchdog_stops_rays_processes_and_spares_the_callers_own(leave: str) -> None:
    temp = tempfile.mkdtemp(prefix="hpo-wd-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, temp, leave], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    started: list[tuple[int, float]] = []  # what this test must end if an assertion fails: the sleep, Ray's
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line, f"the driver said nothing (exit {driver.wait(60)})"
        seen = json.loads(line)
        mine = (int(seen["mine"][0]), float(seen["mine"][1]))
        ray_procs = [(int(pid), float(start)) for pid, start in seen["ray"]]
        started = [mine, *ray_procs]
        assert ray_procs, "Ray started no process"
        driver.wait(120)
        wait_until(lambda: not procs.is_running(int(seen["guard"])), timeout=60)  # the watchdog has done
        assert procs.is_running(*mine), "the watchdog stopped the caller's own child"
        wait_until(lambda: not any(procs.is_running(pid, start) for pid, start in ray_procs), timeout=10)
    finally:
        driver.kill()
        driver.wait(10)
        if driver.stdout is not None:
            driver.stdout.close()
        for pid, start in started:
            procs.terminate(pid, start, force=True)
        shutil.rmtree(temp, ignore_errors=True)
