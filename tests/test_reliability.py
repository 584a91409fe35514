"""Fault injection against a real PostgreSQL and a real local Ray, through the real CLI: workers and
drivers killed, the database restarted or gone, Ctrl-C. No trial may be lost or left RUNNING."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from hpo.sweep import ASK_AHEAD
from storage import close_storage, open_storage
from tests.conftest import run_cli
from tests.pgcluster import PrivateCluster

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def config(path: Path, weights: Path, *, n_trials: int, epochs: int = 4, extra: str = "") -> Path:
    """A small real fine-tuning sweep (digits 5-9 from the digits 0-4 backbone), about a second per epoch."""
    path.write_text(
        f"""
study: {{name: rel, n_trials: {n_trials}, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: {{low: 1.0e-3, high: 3.0e-3, log: true}}
  batch_size: [32]
parallel: 2
pruner: none
early_stopping: {{patience: null}}
train:
  model: resnet18
  weights: {weights}
  dataset: {{type: digits, classes: [5, 6, 7, 8, 9], max_train_samples: 160, max_val_samples: 60}}
  epochs: {epochs}
  checkpoint_every_s: 0  # a checkpoint per epoch: the retries below resume from the last one
{extra}"""
    )
    return path


class Sweep:
    """`hpo sweep` as a real subprocess, output in a file, with its own Ray temp dir."""

    def __init__(self, cfg: Path, url: str, cwd: Path, *args: str) -> None:
        self.ray_dir = Path("/tmp") / f"hpo-rt-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths are limited
        self.log = cwd / f"sweep-{uuid.uuid4().hex[:6]}.log"
        exe = Path(sys.executable).parent / "hpo"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [str(exe), "sweep", str(cfg), "--storage", url, "--no-progress", *args],
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HPO_RAY_TMPDIR": str(self.ray_dir)},
        )

    def wait(self, timeout: float = 400) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    @property
    def output(self) -> str:
        return self.log.read_text()


class Study:
    """Reads the study the way an observer would, through one bounded storage."""

    def __init__(self, url: str, name: str = "rel") -> None:
        self._storage = open_storage(url)
        self.name = name

    def trials(self) -> list[FrozenTrial]:
        try:
            return optuna.load_study(study_name=self.name, storage=self._storage).get_trials()
        except KeyError:
            return []

    def wait_for(self, predicate: Callable[[list[FrozenTrial]], Any], timeout: float = 180, poll: float = 0.2) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = predicate(self.trials())
            if found:
                return found
            time.sleep(poll)
        raise AssertionError(
            f"condition not met in {timeout}s; trials: {[(t.number, t.state.name) for t in self.trials()]}"
        )

    def close(self) -> None:
        close_storage(self._storage)


def running_with_epochs(trials: list[FrozenTrial], attempt: int | None = None) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.RUNNING
        and t.intermediate_values
        and "pid" in (t.user_attrs.get("node") or {})
        and (attempt is None or t.user_attrs.get("attempt") == attempt)
    ]


def root(t: FrozenTrial, by_number: dict[int, FrozenTrial]) -> int:
    while t.user_attrs.get("retry_of") is not None:
        t = by_number[t.user_attrs["retry_of"]]
    return t.number


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and not process_gone(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_killed_workers_fail_at_once_and_their_retries_resume(tmp_path: Path, pg_url: str, pretrained: Path) -> None:
    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=6, epochs=5, extra="retries: 1\nmax_failures: 20\n")
    study = Study(pg_url)
    sweep = Sweep(cfg, pg_url, tmp_path)
    killed: dict[int, tuple[int, dt.datetime]] = {}
    try:
        while len(killed) < 5:
            victims = [
                t for t in study.wait_for(lambda ts: running_with_epochs(ts, attempt=1)) if t.number not in killed
            ]
            if not victims:
                time.sleep(0.2)
                continue
            t = victims[0]
            try:
                os.kill(t.user_attrs["node"]["pid"], signal.SIGKILL)  # mid-epoch: at least one epoch is done
            except ProcessLookupError:  # it ended between the read and the kill: pick another
                continue
            killed[t.number] = (len(t.intermediate_values), dt.datetime.now())
        assert sweep.wait() == 0, sweep.output
        trials = study.trials()
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()
    by_number = {t.number: t for t in trials}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 6
    roots = [root(t, by_number) for t in finished]
    assert len(roots) == len(set(roots)), "a trial and its retry both finished"
    for number, (epochs_seen, _when) in killed.items():
        dead = by_number[number]
        assert dead.state == TrialState.FAIL
        assert dead.user_attrs["fail_reason"].startswith("worker died"), dead.user_attrs
        # told by the driver when Ray reported the death (the reason says so), not by a heartbeat timeout
        assert dead.datetime_complete is not None
        retry = by_number[dead.user_attrs["retried_by"]]
        assert retry.user_attrs["retry_of"] == number and retry.user_attrs["attempt"] == 2
        assert retry.params == dead.params
        assert retry.state == TrialState.COMPLETE
        assert retry.user_attrs["resumed_from_epoch"] >= epochs_seen >= 1  # from the dead trial's last checkpoint
        assert sorted(retry.intermediate_values) == [1, 2, 3, 4, 5]  # the replayed epochs are in its curve too


def test_killed_driver_second_driver_and_reaping(tmp_path: Path, pg_url: str, pretrained: Path) -> None:
    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=4, epochs=6, extra="retries: 1\n")
    study = Study(pg_url)
    first = Sweep(cfg, pg_url, tmp_path)
    try:
        running = study.wait_for(lambda ts: len(running_with_epochs(ts)) == 2 and running_with_epochs(ts))
        pids = [t.user_attrs["node"]["pid"] for t in running]

        second = run_cli("sweep", str(cfg), "--storage", pg_url, "--no-progress", cwd=tmp_path, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is being run by another hpo sweep" in second.stderr and "pid" in second.stderr

        first.proc.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        while time.time() - killed_at < 20 and not (
            all(process_gone(p) for p in pids) and not processes_mentioning(str(first.ray_dir))
        ):
            time.sleep(0.2)
        assert all(process_gone(p) for p in pids), "trial workers outlived their driver by 20 s"
        assert not processes_mentioning(str(first.ray_dir)), "Ray processes outlived their driver by 20 s"
        left_running = [t for t in study.trials() if t.state == TrialState.RUNNING]
        left = [t.number for t in left_running]
        started = {t.number for t in running}
        assert started <= set(left)
        # besides the two that ran, at most ASK_AHEAD trials asked ahead for the next free slots, never started
        ahead = [t for t in left_running if t.number not in started]
        assert len(ahead) <= ASK_AHEAD and all("node" not in t.user_attrs for t in ahead), ahead

        again = Sweep(cfg, pg_url, tmp_path)
        assert again.wait() == 0, again.output
        assert "lost driver" in again.output
        trials = {t.number: t for t in study.trials()}
    finally:
        for s in (first,):
            if s.proc.poll() is None:
                s.proc.kill()
        study.close()
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert len([t for t in trials.values() if t.state in FINISHED]) == 4
    for n in left:
        assert trials[n].state == TrialState.FAIL and trials[n].user_attrs["fail_reason"].startswith("driver lost")
        retry = trials[trials[n].user_attrs["retried_by"]]
        assert retry.params == trials[n].params and retry.state == TrialState.COMPLETE
        if n in started:
            assert retry.user_attrs["attempt"] == 2 and retry.user_attrs["resumed_from_epoch"] >= 1
        else:  # asked ahead, never started: rerun from scratch without spending the one retry
            assert trials[n].user_attrs["fail_reason"].endswith("(never started)")
            assert retry.user_attrs["attempt"] == 1 and not retry.user_attrs.get("resumed_from_epoch")


def test_postgres_restarts_mid_sweep_lose_nothing(tmp_path: Path, private_pg: PrivateCluster, pretrained: Path) -> None:
    url = private_pg.url("hpo")
    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=8, epochs=3)
    study = Study(url)
    sweep = Sweep(cfg, url, tmp_path)
    try:
        study.wait_for(lambda ts: len([t for t in ts if t.state in FINISHED]) >= 2)
        study.close()
        private_pg.restart("fast")
        time.sleep(3)
        private_pg.restart("immediate")
        assert sweep.wait() == 0, sweep.output
        study = Study(url)
        trials = study.trials()
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 8
    assert len(trials) == 8, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    for t in trials:
        assert sorted(t.intermediate_values) == [1, 2, 3]


def test_postgres_gone_past_the_retry_timeout_exits_1_and_keeps_finished_trials(
    tmp_path: Path, private_pg: PrivateCluster, pretrained: Path
) -> None:
    url = private_pg.url("hpo")
    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=8, epochs=3, extra="storage_options: {retry_timeout: 4}\n")
    study = Study(url)
    sweep = Sweep(cfg, url, tmp_path)
    try:
        before = study.wait_for(lambda ts: [t for t in ts if t.state in FINISHED])
        study.close()
        private_pg.stop("fast")
        assert sweep.wait(timeout=120) == 1, sweep.output
        lines = [ln for ln in sweep.output.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "lost the storage" in lines[0], sweep.output
        assert "Traceback" not in sweep.output and "Unhandled error" not in sweep.output  # every call read
        private_pg.start()
        private_pg.wait_ready()
        study = Study(url)
        after = {t.number: t for t in study.trials()}
        for t in before:
            assert after[t.number].state == t.state and after[t.number].value == t.value
        again = Sweep(cfg, url, tmp_path)
        assert again.wait() == 0, again.output
        final = study.trials()
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()
    assert len([t for t in final if t.state in FINISHED]) == 8
    assert not [t for t in final if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_drains_then_cancels(tmp_path: Path, pg_url: str, pretrained: Path, presses: int) -> None:
    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=10, epochs=5)
    study = Study(pg_url)
    sweep = Sweep(cfg, pg_url, tmp_path)
    try:
        running = study.wait_for(lambda ts: len(running_with_epochs(ts)) == 2 and running_with_epochs(ts))
        sweep.proc.send_signal(signal.SIGINT)
        if presses == 2:
            time.sleep(1.0)
            sweep.proc.send_signal(signal.SIGINT)
        assert sweep.wait(timeout=120) == 130, sweep.output
        trials = {t.number: t for t in study.trials()}
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()
    assert "no new trials will start" in sweep.output
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert len(trials) < 10
    for t in running:
        if presses == 1:
            assert trials[t.number].state == TrialState.COMPLETE  # let finish
        else:
            assert trials[t.number].state == TrialState.FAIL
            assert trials[t.number].user_attrs["fail_reason"] == "interrupted"
