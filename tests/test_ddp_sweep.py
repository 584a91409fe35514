"""Data-parallel trials end to end (``resources.ranks_per_trial: 2``, gloo on CPU): a real ``hpo sweep`` on
PostgreSQL runs, prunes and exports; an in-process sweep on a real local Ray leaves no rank and no placement
group behind; the config refuses ranks that contradict the GPUs."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo.cluster.session import RayInfo
from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from hpo.progress import QuietObserver
from hpo.sweep.run import place
from hpo.sweep.stop import Stopper
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, name: str, n_trials: int) -> Path:
    path = tmp_path / "ddp.yaml"
    path.write_text(
        f"""
study: {{name: {name}, n_trials: {n_trials}, sampler: {{name: random, seed: 3}}}}
parallel: 1
resources: {{ranks_per_trial: 2, gpus_per_trial: 0}}
pruner: {{type: median, n_startup_trials: 2, n_warmup_steps: 1}}
search_space:
  lr: {{low: 1.0e-4, high: 1.0, log: true}}
  aug_strength: 0.0
  dropout: 0.0
  batch_size: 16
output_dir: {tmp_path / "runs"}
train:
  model: tests.usermodels:tiny_net
  weights: null
  dataset: {{type: digits, classes: [0, 1, 2], max_train_samples: 64, max_val_samples: 32}}
  image_size: 16
  epochs: 3
  num_workers: 0
  checkpoint_every_s: 0
"""
    )
    return path


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{gpus_per_trial: 2, ranks_per_trial: 3}", "resources.ranks_per_trial: does not match gpus_per_trial: 2"),
        ("{gpus_per_trial: 1, ranks_per_trial: 2}", "resources.ranks_per_trial: does not match gpus_per_trial: 1"),
        ("{gpus_per_trial: 0.5, ranks_per_trial: 2}", "set it to 1, or leave it out, got 2"),
        ("{ranks_per_trial: 0}", "resources.ranks_per_trial: must be a whole number of processes, at least 1"),
        ("{ranks_per_trial: 1.5}", "resources.ranks_per_trial: must be a whole number"),
    ],
)
def test_ranks_that_contradict_the_gpus_are_refused(tmp_path: Path, resources: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"resources: {resources}\ntrain: {{weights: null}}\n")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_sweep_config(cfg, storage=f"sqlite:///{tmp_path / 'a.db'}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("search_space: {batch_size: [16, 33]}\n", "search_space.batch_size: with 2 ranks per trial (resources)"),
        ("search_space: {batch_size: [2, 16]}\n", "each must be a multiple of 2 and at least 4, got 2"),
        ("search_space: {batch_size: {low: 15, high: 64}}\n", "give choices that are multiples of 2"),
        ("search_space: {batch_size: 31}\n", "search_space.batch_size: with 2 ranks per trial"),
    ],
)
def test_batch_sizes_that_do_not_split_over_the_ranks_are_refused_before_the_sweep(
    tmp_path: Path, extra: str, message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"resources: {{ranks_per_trial: 2}}\n{extra}train: {{weights: null}}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_sweep_config(cfg, storage=f"sqlite:///{tmp_path / 'a.db'}")
    ok = tmp_path / "ok.yaml"
    ok.write_text("resources: {ranks_per_trial: 2}\nsearch_space: {batch_size: [16, 32, 64]}\ntrain: {weights: null}\n")
    assert load_sweep_config(ok, storage=f"sqlite:///{tmp_path / 'a.db'}").resources.ranks == 2


@pytest.mark.parametrize(
    ("resources", "cluster", "ranks", "cpus", "gpus"),
    [
        ("{gpus_per_trial: 2}", (16, 4), 2, 8, 2),  # N GPUs: N ranks, auto CPUs: the node's per GPU times N
        ("{ranks_per_trial: 2}", (2, 0), 2, 2, 0),  # no GPU: gloo ranks, 1 CPU each
        ("{ranks_per_trial: 2}", (16, 4), 2, 8, 2),  # auto GPUs: one per rank
        ("{ranks_per_trial: 2, cpus_per_trial: 1}", (2, 0), 2, 1, 0),  # split: half a CPU per rank
        ("{}", (2, 0), 1, 1, 0),
    ],
)
def test_placement_of_ranks(
    tmp_path: Path, resources: str, cluster: tuple[float, float], ranks: int, cpus: float, gpus: float
) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"resources: {resources}\ntrain: {{weights: null}}\n")
    cfg = load_sweep_config(cfg_path, storage=f"sqlite:///{tmp_path / 'a.db'}")
    node_cpus, node_gpus = cluster
    info = RayInfo("local", True, node_cpus, node_gpus, None, (node_cpus, node_gpus) if node_gpus else None)
    p = place(cfg, info)
    assert (p.ranks, p.cpus, p.gpus) == (ranks, cpus, gpus)
    assert (p.rank_cpus, p.rank_gpus) == (cpus / ranks, gpus / ranks)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_cli_sweep_with_two_ranks_per_trial_prunes_and_exports(tmp_path: Path, pg_url: str) -> None:
    cfg = _config(tmp_path, "ddp", n_trials=5)
    env = {"PYTHONPATH": str(REPO), "HPO_RAY_TMPDIR": f"/tmp/hpo-ddp-{uuid.uuid4().hex[:8]}"}
    r = run_cli("sweep", str(cfg), "--storage", pg_url, "--no-progress", cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "in 2 data-parallel ranks (gloo)" in r.stdout
    trials = optuna.load_study(study_name="ddp", storage=pg_url).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.PRUNED) >= 1, states
    assert states.count(TrialState.COMPLETE) >= 1, states
    assert TrialState.FAIL not in states, [t.user_attrs for t in trials]
    pruned = next(t for t in trials if t.state == TrialState.PRUNED)
    assert len(pruned.intermediate_values) < 3  # reported by rank 0 alone: one value per epoch, then stopped
    out = tmp_path / "best.yaml"
    ex = run_cli("export", "--study", "ddp", "--storage", pg_url, "-o", str(out), cwd=tmp_path)
    assert ex.returncode == 0, ex.stdout + ex.stderr
    exported = yaml.safe_load(out.read_text())
    assert exported["train"]["model"] == "tests.usermodels:tiny_net" and exported["train"]["lr"] > 0
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))  # rank 0 cleaned up; no rank wrote elsewhere


@pytest.mark.slow
@pytest.mark.postgres
def test_no_rank_or_placement_group_is_left_after_a_sweep(tmp_path: Path, pg_url: str, ray_local: None) -> None:
    import ray
    from ray._private import state

    from hpo.sweep.run import run_sweep

    cfg = load_sweep_config(_config(tmp_path, "ddp-left", n_trials=4), storage=pg_url)
    result = run_sweep(cfg)
    assert result.exit_code == 0
    counts = result.counts
    assert counts["COMPLETE"] + counts["PRUNED"] == 4
    groups = ray.util.placement_group_table()
    assert groups and all(g["state"] == "REMOVED" for g in groups.values()), groups
    peers = [a for a in state.actors().values() if a.get("ActorClassName", "").endswith("_Peer")]
    assert peers and all(a["State"] == "DEAD" for a in peers), peers


class _TerminateOnceRunning(QuietObserver):
    """SIGTERM for the sweep (as its handler would: ``Stopper.terminate``) once a trial has run an epoch."""

    def __init__(self, stopper: Stopper) -> None:
        self.stopper = stopper

    def tick(self, live: list[dict[str, Any]], counts: Any, best: Any) -> None:
        if not self.stopper.terminating and any(t.get("epoch", 0) >= 1 for t in live):
            self.stopper.terminate()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sweep_terminated_mid_trial_leaves_no_rank_running(tmp_path: Path, pg_url: str, ray_local: None) -> None:
    """SIGTERM with ``drain_timeout: 0`` cancels a running 2-rank trial: the trial is left to resume (FAIL,
    ``stopped``), its placement group is removed and its peer rank is dead within seconds."""
    import ray
    from ray._private import state

    from hpo.sweep.run import run_sweep

    text = _config(tmp_path, "ddp-term", n_trials=2).read_text().replace("epochs: 3", "epochs: 200")
    path = tmp_path / "term.yaml"
    path.write_text(text + "drain_timeout: 0\nearly_stopping: {patience: null}\n")  # still running when stopped
    stopper = Stopper()
    result = run_sweep(
        load_sweep_config(path, storage=pg_url),
        observer=_TerminateOnceRunning(stopper),
        stopper=stopper,
        handle_sigint=False,
    )
    assert result.exit_code == 143, result
    trials = optuna.load_study(study_name="ddp-term", storage=pg_url).get_trials()
    assert [t.user_attrs.get("fail_kind") for t in trials if t.state == TrialState.FAIL] == ["stopped"], trials
    deadline = time.monotonic() + 30
    while True:
        groups = ray.util.placement_group_table()
        peers = [a for a in state.actors().values() if a.get("ActorClassName", "").endswith("_Peer")]
        left = [g for g in groups.values() if g["state"] != "REMOVED"] + [a for a in peers if a["State"] != "DEAD"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert groups and peers and not left, left
