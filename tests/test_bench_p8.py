"""P8's quick pass: the useful-work fraction of a real sweep (the quickstart's workload, pruning and early stopping
off), hpo against Ray Tune with ``reuse_actors=True``. Timings here are noisy: what is asserted is the method (the
same trials on both sides, a breakdown that accounts for all of wall x slots, the baseline's settings), not who
wins. The breakdown's arithmetic is a pure function, tested with a table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.common import tune_available

N_TRIALS = 2
EPOCHS = 2


def _record(entered: float, total: float, pid: int, **extra: float) -> dict[str, object]:
    timings = {
        "train_s": 4.0, "train_data_s": 1.0, "eval_s": 2.0, "eval_data_s": 0.5, "dataset_s": 0.25,
        "model_s": 0.5, "checkpoint_s": 0.25, "report_s": 0.5, "total_s": total,
    }  # fmt: skip
    return {"entered_at": entered, "exited_at": entered + total + 0.5, "pid": pid, "import_s": 0.25,
            "timings": timings, **extra}  # fmt: skip


def test_breakdown_accounts_for_wall_times_slots() -> None:
    from benchmarks.p8_useful_work import PARTS, breakdown

    # two hpo trials on one worker: the first waits for the worker, the second for dispatch
    records = [
        _record(0.0, 8.0, 7, queued_s=2.0, duration_s=9.0),
        _record(10.0, 8.0, 7, queued_s=0.5, duration_s=9.0),
    ]
    f = breakdown(20.0, records, slots=2)  # 40 slot-seconds
    assert set(f) == set(PARTS) and math.isclose(sum(f.values()), 1.0)
    assert math.isclose(f["useful"], 2 * (4.0 - 1.0 + 2.0 - 0.5) / 40)
    assert math.isclose(f["data"], 2 * 1.5 / 40)
    assert math.isclose(f["fit_other"], 2 * (8.0 - 7.5) / 40)  # total_s less what fit named
    assert math.isclose(f["imports"], 2 * 0.25 / 40)
    assert math.isclose(f["task"], 2 * (0.25 + 0.5) / 40)  # in the workload around fit, and the task around that
    assert math.isclose(f["worker_start"], 2.0 / 40) and math.isclose(f["dispatch"], 0.5 / 40)
    assert math.isclose(f["remainder"], 1.0 - sum(v for k, v in f.items() if k != "remainder"))
    # Tune's records carry no queueing: what its runner does between trials is the remainder
    tune = breakdown(20.0, [{k: v for k, v in r.items() if k not in ("queued_s", "duration_s")} for r in records])
    assert tune["dispatch"] == tune["worker_start"] == 0.0 and tune["remainder"] > f["remainder"]


def test_the_same_fixed_trials_on_both_sides() -> None:
    from benchmarks.p8_useful_work import quickstart, trial_params

    a, b = trial_params(24), trial_params(24)
    assert a == b and len({tuple(sorted(p.items())) for p in a}) == 24
    space = quickstart()["search_space"]  # the quickstart's own ranges, whatever they are now
    lr = space["lr"]
    assert all(p["batch_size"] in space["batch_size"] and lr["low"] <= p["lr"] <= lr["high"] for p in a)
    assert {p["batch_size"] for p in a} == set(space["batch_size"])  # every choice is drawn in 24 trials


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_p8_quick(pg_server: str, pretrained: Path) -> None:
    from benchmarks import p8_useful_work as p8

    result = p8.run(pg_server, quick=True, n_trials=N_TRIALS, weights=str(pretrained), epochs=EPOCHS)
    assert result.settings["n_trials"] == N_TRIALS and result.settings["parallel"] == 2
    assert result.settings["pruner"] == "none" and result.settings["early_stopping"] is None
    row = result.rows[0]
    assert row.comparison is not None and row.comparison.repeats >= 1
    for fractions in (run["fractions"] for runs in result.raw["runs"].values() for run in runs):
        assert 0.0 < fractions["useful"] <= 1.0
        assert abs(sum(fractions.values()) - 1.0) <= 0.05
        assert all(v >= -0.05 for v in fractions.values()), fractions  # no part counted twice
    hpo_runs = result.raw["runs"]["hpo"]
    assert all(len(run["trials"]) == N_TRIALS for run in hpo_runs)
    assert all(t["epochs_run"] == EPOCHS for run in hpo_runs for t in run["trials"])
    assert row.passed == (row.comparison.hpo[0] >= p8.GOAL and (not tune_available() or row.comparison.ratio > 1))
    if not tune_available():
        pytest.skip("Ray Tune is not installed: pip install 'ray[tune]' (hpo's side ran)")
    assert result.baselines["ray_tune"]["reuse_actors"] is True
    assert result.baselines["ray_tune"]["max_concurrent_trials"] == 2
    tune_runs = result.raw["runs"]["ray_tune"]
    assert all(len(run["trials"]) == N_TRIALS for run in tune_runs)
    # the same trials trained the same epochs on both sides
    assert sum(t["epochs_run"] for t in tune_runs[0]["trials"]) == sum(t["epochs_run"] for t in hpo_runs[0]["trials"])
    assert math.isclose(row.comparison.ratio, row.comparison.hpo[0] / row.comparison.baseline[0])
