"""The search features end to end through the real CLI on PostgreSQL, with real (tiny) training: conditional
parameters, a multi-objective study, and each pruner type."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRAIN = """
train:
  model: resnet18
  weights: null
  dataset: {type: digits, classes: [0, 1, 2], max_train_samples: 90, max_val_samples: 45}
  image_size: 32
  epochs: 3
"""


def _sweep(tmp_path: Path, url: str, text: str) -> str:
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(text + TRAIN + f"output_dir: {tmp_path / 'runs'}\n")
    env = {"HPO_RAY_TMPDIR": f"/tmp/hpo-e2e-{uuid.uuid4().hex[:8]}"}
    r = run_cli("sweep", str(cfg), "--storage", url, "--no-progress", cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_conditional_parameters_through_the_cli(tmp_path: Path, pg_url: str) -> None:
    _sweep(
        tmp_path,
        pg_url,
        "study: {name: cond, n_trials: 6, sampler: {name: random, seed: 2}}\npruner: none\nparallel: 2\n"
        "search_space:\n  optimizer: [adamw, sgd]\n  lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
        "  momentum: {low: 0.8, high: 0.99, when: {optimizer: sgd}}\n"
        "  batch_size: 32\n  dropout: 0.1\n  weight_decay: 1.0e-4\n  aug_strength: 0.0\n",
    )
    trials = optuna.load_study(study_name="cond", storage=pg_url).trials
    sgd = [t for t in trials if t.params["optimizer"] == "sgd"]
    adamw = [t for t in trials if t.params["optimizer"] == "adamw"]
    assert sgd and adamw, [t.params for t in trials]
    assert all("momentum" in t.params for t in sgd) and all("momentum" not in t.params for t in adamw)


def test_a_multi_objective_sweep_through_the_cli(tmp_path: Path, pg_url: str) -> None:
    _sweep(
        tmp_path,
        pg_url,
        "study: {name: mo, n_trials: 6, metrics: [val_acc, latency_ms], latency_batch: 8, "
        "sampler: {name: random, seed: 2}}\npruner: {type: median, n_startup_trials: 1, n_warmup_steps: 1}\n"
        "early_stopping: {patience: null}\nparallel: 1\n"
        "search_space:\n  lr: [1.0e-3, 5.0]\n  batch_size: 32\n  dropout: 0.1\n  weight_decay: 1.0e-4\n"
        "  aug_strength: 0.0\n",
    )
    study = optuna.load_study(study_name="mo", storage=pg_url)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    states = [t.state for t in study.trials]
    # random seed 2 draws lr 1e-3, 1e-3, 1e-3, 5.0, ...: the diverging trial is pruned on the primary metric
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, states
    front = {t.number for t in study.best_trials}
    ex = run_cli("export", "--study", "mo", "--storage", pg_url, "-o", str(tmp_path / "best.yaml"))
    assert ex.returncode == 0, ex.stderr
    st = json.loads(run_cli("status", "--study", "mo", "--storage", pg_url, "--json").stdout)
    assert {p["number"] for p in st["pareto"]} == front
    exported = int(ex.stdout.split("exported trial ")[1].split()[0])
    assert exported in front


@pytest.mark.parametrize(
    "pruner",
    [
        "{type: percentile, percentile: 50.0, n_startup_trials: 1, n_warmup_steps: 1}",
        "{type: successive_halving, min_resource: 1, reduction_factor: 2}",
        "{type: hyperband, min_resource: 1, max_resource: 3, reduction_factor: 2}",
    ],
    ids=["percentile", "successive_halving", "hyperband"],
)
def test_each_pruner_type_runs_a_sweep_through_the_cli(tmp_path: Path, pg_url: str, pruner: str) -> None:
    """(median: tests/test_e2e_cli.py.) Random seed 2 draws lr 1e-3 three times, then 5.0, which diverges."""
    _sweep(
        tmp_path,
        pg_url,
        "study: {name: pr, n_trials: 5, sampler: {name: random, seed: 2}}\n"
        f"pruner: {pruner}\nearly_stopping: {{patience: null}}\nparallel: 1\n"
        "search_space:\n  lr: [1.0e-3, 5.0]\n  dropout: 0.1\n  weight_decay: 1.0e-4\n  aug_strength: 0.0\n",
    )
    trials = optuna.load_study(study_name="pr", storage=pg_url).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5 and TrialState.COMPLETE in {t.state for t in finished}
    assert all(t.state != TrialState.RUNNING for t in trials)
