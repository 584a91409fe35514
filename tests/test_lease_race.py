"""Two ``hpo sweep`` processes on one study, started together, through the real CLI on PostgreSQL and on
SQLite: the lease is taken atomically, so exactly one runs and the other is refused before it writes a
trial. And a sweep the cluster cannot run is refused before its study exists."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.fixtures_files import tiny_sweep

pytestmark = [pytest.mark.slow]

CONFIG = tiny_sweep("race") + "parallel: 1\n"


def _start(cfg: Path, url: str, cwd: Path) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "hpo"
    ray_dir = Path("/tmp") / f"hpo-race-{uuid.uuid4().hex[:8]}"
    return subprocess.Popen(
        [str(exe), "sweep", str(cfg), "--storage", url, "--no-progress"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HPO_RAY_TMPDIR": str(ray_dir)},
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_sweeps_started_together_exactly_one_runs(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/race.db" if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    cfg = tmp_path / "race.yaml"
    cfg.write_text(CONFIG + f"output_dir: {tmp_path / 'runs'}\n")
    first = _start(cfg, url, tmp_path)
    time.sleep(0.05)  # started within 100 ms of each other
    second = _start(cfg, url, tmp_path)
    outs = {}
    for p in (first, second):
        out, _ = p.communicate(timeout=600)
        outs[p.pid] = (p.returncode, out)
    codes = sorted(code for code, _ in outs.values())
    assert codes == [0, 2], outs
    winner = next(pid for pid, (code, _) in outs.items() if code == 0)
    refused = next(out for code, out in outs.values() if code == 2)
    assert re.search(rf"another hpo sweep \(host {re.escape(socket.gethostname())}, pid {winner},", refused), refused
    assert len(refused.strip().splitlines()) == 1, refused  # one line, no traceback
    trials = optuna.load_study(study_name="race", storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2 and len(trials) == 2


def test_a_sweep_the_cluster_cannot_run_is_refused_before_its_study_exists(tmp_path: Path) -> None:
    """Bug 7: the CPU/GPU fit check ran after the study was created, leaving an empty study behind."""
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(CONFIG + "resources: {gpus_per_trial: 1}\n")
    db = tmp_path / "gpu.db"
    r = run_cli(
        "sweep",
        str(cfg),
        "--storage",
        f"sqlite:///{db}",
        "--no-progress",
        cwd=tmp_path,
        env={"HPO_RAY_TMPDIR": f"/tmp/hpo-gpu-{uuid.uuid4().hex[:8]}"},
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "resources.gpus_per_trial: the Ray cluster has 0 GPUs, got 1" in r.stderr
    if db.exists():
        assert optuna.get_all_study_names(f"sqlite:///{db}") == []
