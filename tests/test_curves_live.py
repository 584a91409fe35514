"""The learning-curve benchmark's live check (benchmarks/curves/live.py, LIVE-PROTOCOL.md): its measures, its
verdict, the replay at the live setting, and (slow) one real cell of each arm."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.curves import live
from benchmarks.curves.live import Trial


def test_final_test_is_the_best_val_finished_trial_earliest_on_ties() -> None:
    trials = [
        Trial(finished=3.0, epochs=12, val=0.9, test=0.70),
        Trial(finished=1.0, epochs=2, val=0.99, test=None),  # stopped: never the incumbent
        Trial(finished=2.0, epochs=8, val=0.9, test=0.80),  # ties 0.9 and ended first
        Trial(finished=4.0, epochs=12, val=0.85, test=0.95),
    ]
    assert live.final_test(trials) == 0.80
    assert live.final_test([Trial(1.0, 2, 0.5, None)]) is None


def _row(task: str, seed: int, arm: str, final: float | None) -> dict[str, Any]:
    return {"task": task, "seed": seed, "arm": arm, "final_test": final, "wall_s": 1.0, "trials": [{"epochs": 3}]}


def _rows(diffs: dict[str, list[float]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    rows = {}
    for task, ds in diffs.items():
        for i, d in enumerate(ds):
            seed = live.SEEDS[i]
            rows[(task, seed, "hpo-default")] = _row(task, seed, "hpo-default", 0.5 + d / 100)
            rows[(task, seed, "ray-tune-asha")] = _row(task, seed, "ray-tune-asha", 0.5)
    return rows


def test_signs_that_agree_pass_only_with_every_seed() -> None:
    replay = {"a": [1.0, 2.0, 0.5], "b": [0.5, 1.0, 1.5]}
    full = live.summarize(_rows({"a": [1.0, -0.5, 2.0, 1.0, 0.0], "b": [0.5, 0.5, 1.0, -1.0, 2.0]}), replay)
    assert full["pooled"]["seeds"] == list(live.SEEDS)
    assert math.isclose(full["pooled"]["live"]["mean"], 0.65)
    assert full["signs_agree"] and full["complete"] and full["verdict"] == "PASS"
    assert full["per_task"]["a"]["live_epochs"] == {"hpo-default": 15, "ray-tune-asha": 15}
    short = live.summarize(_rows({"a": [1.0, 2.0], "b": [0.5, 1.0]}), replay)
    assert short["signs_agree"] and not short["complete"] and short["verdict"] == "incomplete"


def test_signs_that_differ_or_a_zero_mean_fail() -> None:
    replay = {"a": [-1.0, -2.0], "b": [-0.5, -1.0]}
    rows = _rows({"a": [1.0] * 5, "b": [0.5] * 5})
    assert live.summarize(rows, replay)["verdict"] == "FAIL"
    zero = _rows({"a": [0.0] * 5, "b": [0.0] * 5})
    assert live.summarize(zero, replay)["verdict"] == "FAIL"


def test_a_seed_missing_an_arm_or_a_finished_trial_is_left_out_of_the_pairs() -> None:
    rows = _rows({"a": [1.0, 2.0, 3.0]})
    del rows[("a", live.SEEDS[1], "ray-tune-asha")]
    rows[("a", live.SEEDS[2], "hpo-default")]["final_test"] = None
    assert list(live.live_diffs(rows, "a")) == [live.SEEDS[0]]


def test_the_replay_at_the_live_setting_runs_both_arms() -> None:
    diffs = live.replay_same("digits59-few", seeds=(1000, 1001, 1002))
    assert len(diffs) == 3 and all(-100 <= d <= 100 for d in diffs)
    assert diffs == live.replay_same("digits59-few", seeds=(1000, 1001, 1002))  # deterministic in its seeds


def test_the_cells_run_task_by_task_with_both_arms_of_a_seed_together() -> None:
    order = live.cells(("x", "y"), (1, 2))
    assert order[:4] == [
        ("x", 1, "hpo-default"),
        ("x", 1, "ray-tune-asha"),
        ("x", 2, "hpo-default"),
        ("x", 2, "ray-tune-asha"),
    ]
    assert {c[0] for c in order[4:]} == {"y"}


@pytest.mark.slow
def test_one_live_cell_of_each_arm_records_finished_trials_with_test_accuracy(tmp_path: Path, pg_server: str) -> None:
    """A real hpo sweep and a real Tune run on digits59-few (2 trials, 3 epochs), appended to the runs file."""
    runs = tmp_path / "live_runs.jsonl"
    assert live.record(pg_server, ("digits59-few",), (7,), n_trials=2, epochs=3, path=runs) == 2
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [(r["task"], r["seed"], r["arm"]) for r in rows] == [
        ("digits59-few", 7, "hpo-default"),
        ("digits59-few", 7, "ray-tune-asha"),
    ]
    for row in rows:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", row["commit"]) and row["wall_s"] > 0
        assert len(row["trials"]) == 2, row
        assert row["final_test"] is not None and 0.0 <= row["final_test"] <= 1.0
        assert all(1 <= t["epochs"] <= 3 for t in row["trials"])
    assert live.record(pg_server, ("digits59-few",), (7,), n_trials=2, epochs=3, path=runs) == 0  # resumes


def test_the_report_renders_the_live_section_with_its_verdict() -> None:
    from benchmarks.curves.report import live_section

    replay = {"a": [-1.0, -2.0], "b": [-0.5, -1.0]}
    doc = {
        "commit": "c" * 40,
        "runs": "results/live_runs.jsonl",
        "run_commits": ["d" * 40],
        "n_trials": 20,
        "parallel": 2,
        "seeds": list(live.SEEDS),
        "replay_seeds": [1000, 1001],
        "arms": {"hpo-default": "x", "ray-tune-asha": "y"},
        **live.summarize(_rows({"a": [1.0] * 5, "b": [0.5, 1.0, 0.5, 1.0, 0.5]}), replay),
    }
    text = "\n".join(live_section(doc))
    assert "| a | 5 | +1.00 pp" in text and "| pooled | 5 | win: +0.85 pp [" in text
    assert "Signs agree: no" in text and "Verdict: **FAIL**" in text
