"""P5's harness end to end at toy size: every arm (hpo, random, Ray Tune ASHA with reuse_actors, stock
Optuna) trains real trials, each finished trial gets a test accuracy, and the summary and the PNG follow."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest

from benchmarks import p5_search
from benchmarks.search_tasks import PRETRAINED, digits


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_p5_harness_runs_every_arm_and_scores_on_test(pg_server: str, tmp_path: Path, monkeypatch) -> None:
    if not PRETRAINED.is_file():
        pytest.skip(f"{PRETRAINED} is missing (make pretrain)")
    monkeypatch.setattr(p5_search, "PNG", tmp_path / "p5.png")
    task = digits()
    train = {**task.train, "epochs": 2, "dataset": {**task.train["dataset"], "max_train_samples": 60}}
    small = dataclasses.replace(task, train=train)
    result = p5_search.run(pg_server, seeds=[7], tasks=[small], n_trials=3)
    per_run = result.raw["summary"]["per_run"]["digits/7"]
    assert set(per_run) == set(p5_search.ARMS)
    for arm, row in per_run.items():
        assert row["trials"] == 3, arm
        assert row["completed"] >= 1, arm
        assert 0.0 <= row["final_test"] <= 1.0 and math.isfinite(row["area"]), arm
    assert per_run["a"]["epochs"] == 6  # no pruning, no early stopping: 3 trials x 2 epochs
    assert result.baselines["ray_tune_asha"]["reuse_actors"] is True
    assert {r.metric for r in result.rows} >= {
        "(b) vs (a): final test acc (mean of runs)",
        "(b) vs (d) Ray Tune ASHA: anytime area (test acc)",
    }
    if importlib.util.find_spec("matplotlib") is None:  # the bench extra draws it; the dev extra lacks it
        assert any("not drawn" in note for note in result.notes)
    else:
        assert (tmp_path / "p5.png").stat().st_size > 1000
