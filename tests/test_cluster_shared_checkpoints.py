"""Checkpoints every node reaches: a real two-node Ray cluster on this machine whose nodes run in different
working folders, a sweep whose ``output_dir`` is a ``file://`` URL (fsspec's local backend, standing in for
object storage) on a folder both see, and trials that lose their node or get a SIGTERM and resume elsewhere."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.test_cluster import Cluster, _config, two_nodes
from tests.test_reliability import Study, Sweep, running_with_epochs

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def cluster_apart() -> Iterator[Cluster]:
    """Head and worker node, each started in its own working folder."""
    with two_nodes("f", own_cwd=True) as c:
        yield c


def _sweep_config(tmp_path: Path, weights: Path, checkpoint_every_s: float) -> tuple[Path, Path]:
    shared = tmp_path / "shared"
    extra = f"  checkpoint_every_s: {checkpoint_every_s}\noutput_dir: file://{shared}/runs\n"
    return _config(tmp_path / "c.yaml", weights, n_trials=2, epochs=6, extra=extra), shared


def _on_node(trials: list[FrozenTrial], node: str | None = None, exclude: str | None = None) -> list[FrozenTrial]:
    return [
        t
        for t in running_with_epochs(trials)
        if (node is None or t.user_attrs["node"]["id"] == node) and t.user_attrs["node"]["id"] != exclude
    ]


def _retries(trials: list[FrozenTrial]) -> list[tuple[FrozenTrial, FrozenTrial]]:
    """Each failed trial with its retry."""
    by_number = {t.number: t for t in trials}
    return [(t, by_number[t.user_attrs["retried_by"]]) for t in trials if t.state == TrialState.FAIL]


def _run(
    tmp_path: Path, pg_url: str, cfg: Path, cluster: Cluster, act: Callable[[Study], None]
) -> tuple[list[FrozenTrial], str]:
    """Run the sweep from a folder of its own, ``act`` on it while it runs, and wait for it to end (exit 0)."""
    driver = tmp_path / "driver"
    driver.mkdir()
    study = Study(pg_url, "mn")
    sweep = Sweep(cfg, pg_url, driver, "--ray-address", cluster.address)
    try:
        act(study)
        assert sweep.wait(timeout=400) == 0, sweep.output
        return study.trials(), sweep.output
    finally:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        study.close()


def test_a_trial_whose_node_dies_resumes_on_the_other_node_from_the_shared_url(
    tmp_path: Path, cluster_apart: Cluster, pg_url: str, pretrained: Path
) -> None:
    cfg, shared = _sweep_config(tmp_path, pretrained, checkpoint_every_s=0)

    def kill_the_worker_node(study: Study) -> None:
        running = study.wait_for(lambda ts: len(running_with_epochs(ts)) == 2 and running_with_epochs(ts))
        ids = {t.user_attrs["node"]["id"] for t in running}
        assert len(ids) == 2, "the two running trials should be on different nodes (1 CPU each)"
        cluster_apart.kill_worker_node()

    trials, output = _run(tmp_path, pg_url, cfg, cluster_apart, kill_the_worker_node)
    pairs = _retries(trials)
    assert pairs, "no trial failed when its node died: " + output
    for failed, retry in pairs:
        assert failed.user_attrs["checkpoint_dir"].startswith(f"file://{shared}/runs/mn/trial-")
        assert retry.state == TrialState.COMPLETE and retry.params == failed.params
        assert retry.user_attrs["node"]["id"] != failed.user_attrs["node"]["id"]  # on the surviving node
        assert retry.user_attrs["resumed_from_epoch"] >= 1, retry.user_attrs  # read through the file:// URL
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    for t in trials:  # a finished trial's checkpoint is removed through fsspec; a failed one's stays (it resumes)
        kept = Path(t.user_attrs["checkpoint_dir"].removeprefix("file://"), "checkpoint.pt").is_file()
        assert kept == (t.state == TrialState.FAIL), (t.number, t.state)
    for d in cluster_apart.dirs:  # nothing landed in a node's own folder
        assert not list((d / "cwd").iterdir())


def test_a_sigterm_to_a_trials_worker_checkpoints_it_first_and_its_retry_resumes(
    tmp_path: Path, cluster_apart: Cluster, pg_url: str, pretrained: Path
) -> None:
    """``checkpoint_every_s`` of an hour: no epoch is ever saved, so a retry that resumes at all resumes from the
    checkpoint the SIGTERM wrote (mid-epoch, after the batch in flight)."""
    cfg, _ = _sweep_config(tmp_path, pretrained, checkpoint_every_s=3600)
    stopped: list[FrozenTrial] = []

    def sigterm_a_worker(study: Study) -> None:
        running = study.wait_for(lambda ts: _on_node(ts))
        stopped.append(running[0])
        os.kill(running[0].user_attrs["node"]["pid"], signal.SIGTERM)

    trials, output = _run(tmp_path, pg_url, cfg, cluster_apart, sigterm_a_worker)
    by_number = {t.number: t for t in trials}
    failed = by_number[stopped[0].number]
    assert failed.state == TrialState.FAIL, (failed.state, failed.user_attrs, output)
    assert failed.user_attrs["fail_reason"].startswith("worker died"), failed.user_attrs["fail_reason"]
    retry = by_number[failed.user_attrs["retried_by"]]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] >= len(stopped[0].intermediate_values) >= 1, retry.user_attrs
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
