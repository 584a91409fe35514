"""P5's measures (benchmarks/p5_search.py) are pure functions of trial records: the anytime curve, the
final test accuracy of the val-selected trial, epochs to reach (a), and the per-arm means."""

from __future__ import annotations

import math

from benchmarks.p5_search import TrialRecord, anytime, epochs_to, final_test, summarize


def R(finished: float, epochs: int, val: float, test: float | None) -> TrialRecord:
    return TrialRecord(finished, epochs, val, test)


def test_anytime_selects_on_val_and_reports_test_in_finish_order() -> None:
    records = [
        R(3.0, 2, 0.90, 0.70),  # finishes second: best val so far, but a worse test accuracy
        R(1.0, 4, 0.80, 0.80),
        R(2.0, 1, 0.99, None),  # pruned: never selected, its epochs count
    ]
    curve = anytime(records, horizon=8, chance=0.2)
    # epochs 1-3: nothing finished; 4: trial@1 (test .8); 5: pruned one adds an epoch; 7: trial@3 selected (.7)
    assert curve == [0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.7, 0.7]
    assert final_test(records, chance=0.2) == 0.7
    assert epochs_to(curve, 0.8) == 4
    assert epochs_to(curve, 0.9) is None
    assert epochs_to([0.796], 0.8) == 1  # within 0.5 pp counts


def test_summarize_means_areas_and_the_a_target() -> None:
    runs = {
        "t/0": {
            "a": [R(1, 4, 0.8, 0.8), R(2, 4, 0.9, 0.9)],
            "b": [R(1, 4, 0.9, 0.9), R(2, 1, 0.1, None)],
        }
    }
    s = summarize(runs, {"t/0": 0.2})
    a, b = s["per_run"]["t/0"]["a"], s["per_run"]["t/0"]["b"]
    assert a["epochs"] == 8 and b["epochs"] == 5
    assert a["final_test"] == 0.9 and b["final_test"] == 0.9
    assert b["epochs_to_a"] == 4 and a["epochs_to_a"] == 8
    assert len(a["curve"]) == len(b["curve"]) == 8
    assert math.isclose(b["area"], (3 * 0.2 + 5 * 0.9) / 8)
    assert b["area"] > a["area"]
    assert s["means"]["b"]["reached_a"] == 1 and s["means"]["b"]["runs"] == 1
