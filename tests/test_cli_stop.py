"""``hpo stop`` from another shell, end to end: a real ``hpo sweep`` subprocess training real trials on a real
PostgreSQL drains (no new trial, the running one finishes and is saved) and exits 130; the next sweep on the study
runs, its predecessor's request ignored. The request side alone is in ``tests/test_cli_trials_best.py``; the
stopper's announcement in ``test_remote_request_is_a_first_ctrl_c`` below."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.sweep.stop import Stopper, is_request_for
from tests.conftest import run_cli
from tests.fixtures_files import start_cli_sweep, tiny_sweep, wait_for_reports


class _Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_remote_request_is_a_first_ctrl_c() -> None:
    stopper, said = Stopper(), _Said()
    stopper.remote_request({"owner": "o", "user": "alice", "host": "h1", "pid": 7})
    assert stopper.draining and not stopper.cancelling and not stopper.terminating
    stopper.announce(said, 20)  # type: ignore[arg-type]
    assert said.lines == [
        "stop requested from another shell (hpo stop by alice on h1 (pid 7)): no new trials will start; running "
        "trials will finish (Ctrl-C here cancels them)"
    ]
    stopper.remote_request({"owner": "o"})  # a second poll's answer changes nothing
    stopper.request()  # Ctrl-C in the sweep's shell then cancels, as a second Ctrl-C does
    stopper.announce(said, 20)  # type: ignore[arg-type]
    assert stopper.cancelling and said.lines[-1] == "Ctrl-C again: cancelling running trials"


@pytest.mark.parametrize(
    ("value", "owner", "expected"),
    [({"owner": "a"}, "a", True), ({"owner": "a"}, "b", False), (None, "a", False), ({"owner": "a"}, None, False)],
)
def test_a_request_names_one_sweep(value: object, owner: str | None, expected: bool) -> None:
    assert is_request_for(value, owner) is expected


@pytest.mark.slow
@pytest.mark.postgres
def test_hpo_stop_drains_a_running_sweep_and_the_next_sweep_runs(pg_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "halt.yaml"
    cfg.write_text(
        tiny_sweep("halt").replace("n_trials: 2", "n_trials: 40").replace("epochs: 1", "epochs: 3")
        + f"parallel: 1\noutput_dir: {tmp_path / 'runs'}\n"
    )
    sweep = start_cli_sweep(cfg, pg_url, tmp_path, "stop")
    try:
        wait_for_reports(pg_url, "halt", sweep, timeout=300)
        asked = run_cli("stop", "--study", "halt", "--storage", pg_url)
        assert asked.returncode == 0, asked.stderr
        assert f"asked the sweep on study 'halt' (host {os.uname().nodename}, pid {sweep.pid})" in asked.stdout
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    assert sweep.returncode == 130, out + err
    assert "stop requested from another shell (hpo stop by" in out, out
    assert "Traceback" not in out + err

    trials = optuna.load_study(study_name="halt", storage=pg_url).get_trials()
    states = [t.state for t in trials]
    finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    assert TrialState.RUNNING not in states and TrialState.FAIL not in states, states  # drained, not cancelled
    assert 1 <= finished < 40
    assert all(t.user_attrs.get("epochs_run") for t in trials if t.state == TrialState.COMPLETE)

    # the next sweep is not stopped by the request its predecessor got: it runs one more trial to its target
    env = {"HPO_RAY_TMPDIR": f"/tmp/hpo-stop2-{uuid.uuid4().hex[:8]}"}
    again = run_cli(
        "sweep", str(cfg), "--storage", pg_url, "--no-progress", "-n", str(finished + 1), cwd=tmp_path, env=env
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stop requested" not in again.stdout
    after = optuna.load_study(study_name="halt", storage=pg_url).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after) == finished + 1
