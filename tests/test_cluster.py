"""Scale-out: a real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
sweeps joining it with --ray-address, results in PostgreSQL, and a node killed mid-sweep."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.test_reliability import Study, Sweep, running_with_epochs

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    dirs: list[Path]

    def kill_worker_node(self) -> None:
        """The second node dies at once: every process of it, SIGKILL."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(30)


def _start(args: list[str], temp_dir: Path, env: dict[str, str], own_cwd: bool) -> subprocess.Popen[bytes]:
    """A Ray node; ``own_cwd``: in a working folder of its own (``temp_dir/cwd``), so that nothing of a trial's
    may depend on the driver's folder."""
    cwd = None
    if own_cwd:
        cwd = temp_dir / "cwd"
        cwd.mkdir(parents=True)
    return subprocess.Popen(
        [
            RAY,
            "start",
            "--block",
            "--num-cpus",
            "1",
            "--temp-dir",
            str(temp_dir),
            "--node-ip-address",
            "127.0.0.1",
            *args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the test can kill the whole node
    )


@contextlib.contextmanager
def two_nodes(prefix: str, *, own_cwd: bool = False) -> Iterator[Cluster]:
    """A head and a worker node of one CPU each, stopped (and their folders removed) on the way out."""
    port = _free_port()
    dirs = [Path("/tmp") / f"hpo-{prefix}{i}-{uuid.uuid4().hex[:6]}" for i in (1, 2)]
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # notice a dead node in a few seconds rather than the default half minute
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "4",
        "RAY_health_check_timeout_ms": "1000",
    }
    head = _start(["--head", "--port", str(port), "--include-dashboard", "false"], dirs[0], env, own_cwd)
    address = f"127.0.0.1:{port}"
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline, nodes, r = time.time() + 90, 0, None
        while time.time() < deadline and nodes < 2:
            r = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True)
            nodes = r.stdout.count(" node_") if r.returncode == 0 else 0
            if r.returncode == 0 and worker is None:
                worker = _start(["--address", address], dirs[1], env, own_cwd)
            time.sleep(1)
        if worker is None or nodes < 2:
            tail = f"{r.stdout[-500:]} {r.stderr[-500:]}" if r is not None else ""
            pytest.fail(f"two-node Ray cluster did not come up: {tail}")
        yield Cluster(address, head, worker, dirs)
    finally:
        for proc in (worker, head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with two_nodes("n") as c:
        yield c


def _config(path: Path, weights: Path, *, n_trials: int, epochs: int, extra: str = "") -> Path:
    path.write_text(
        f"""
study: {{name: mn, n_trials: {n_trials}, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: {{low: 1.0e-3, high: 3.0e-3, log: true}}
  batch_size: [32]
parallel: 2
pruner: none
early_stopping: {{patience: null}}
train:
  weights: {weights}
  epochs: {epochs}
  dataset: {{type: digits, classes: [5, 6, 7], max_train_samples: 120, max_val_samples: 30}}
{extra}"""
    )
    return path


def test_a_sweep_spreads_over_both_nodes(tmp_path: Path, cluster: Cluster, pg_url: str, pretrained: Path) -> None:
    cfg = _config(tmp_path / "c.yaml", pretrained, n_trials=6, epochs=2)
    r = run_cli("sweep", str(cfg), "--storage", pg_url, "--ray-address", cluster.address, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Ray at {cluster.address} (2 CPUs" in r.stdout
    trials = optuna.load_study(study_name="mn", storage=pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    nodes = {t.user_attrs["node"]["id"] for t in trials}
    assert len(nodes) == 2, nodes


def test_a_node_killed_mid_sweep_fails_its_trials_and_they_retry_on_the_survivor(
    tmp_path: Path, cluster: Cluster, pg_url: str, pretrained: Path
) -> None:
    cfg = _config(tmp_path / "c.yaml", pretrained, n_trials=4, epochs=6)  # retries: the default (2) retries them
    study = Study(pg_url, "mn")
    sweep = Sweep(cfg, pg_url, tmp_path, "--ray-address", cluster.address)
    try:
        running = study.wait_for(lambda ts: len(running_with_epochs(ts)) == 2 and running_with_epochs(ts))
        ids = {t.user_attrs["node"]["id"] for t in running}
        assert len(ids) == 2, "the two running trials should be on different nodes (1 CPU each)"
        cluster.kill_worker_node()
        assert sweep.wait(timeout=400) == 0, sweep.output
        trials = {t.number: t for t in study.trials()}
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()
    failed = [t for t in trials.values() if t.state == TrialState.FAIL]
    assert failed, "no trial failed when its node died"
    dead_node = failed[0].user_attrs["node"]["id"]
    head_node = next(i for i in ids if i != dead_node)
    for t in failed:
        assert t.user_attrs["node"]["id"] == dead_node
        assert t.user_attrs["fail_reason"].startswith(("node died", "worker died")), t.user_attrs["fail_reason"]
        retry = trials[t.user_attrs["retried_by"]]
        assert retry.state == TrialState.COMPLETE and retry.params == t.params
        assert retry.user_attrs["node"]["id"] == head_node
    assert len([t for t in trials.values() if t.state == TrialState.COMPLETE]) == 4
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
