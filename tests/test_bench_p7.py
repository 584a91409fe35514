"""P7's quick pass: the slot hand-over to a reused worker's first optimizer step, hpo against Ray Tune with
``reuse_actors=True`` on the same ``trials.fit`` with a pretrained checkpoint loaded; plus the pairing rule
as a table. Timings are noisy here: the method is asserted (rows, settings, repeats, verdict from the
median), not who wins."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from benchmarks.common import tune_available


def _rec(entered: float, step: float, exited: float) -> dict[str, float]:
    return {"entered_at": entered, "first_step_at": step, "exited_at": exited}


@pytest.mark.parametrize(
    ("records", "parallel", "expected"),
    [
        # two slots: trials 0 and 1 start fresh; 2 takes the slot freed by the first to end (t=5), 3 by the next (t=6)
        ([_rec(0, 1, 6), _rec(0.1, 1, 5), _rec(5.2, 5.5, 9), _rec(6.1, 6.4, 10)], 2, [(0.2, 0.5), (0.1, 0.4)]),
        # one slot: each trial follows the one before it
        ([_rec(0, 1, 2), _rec(2.5, 3, 4), _rec(4.1, 4.2, 5)], 1, [(0.5, 1.0), (0.1, 0.2)]),
        # only fresh slots: no hand-over
        ([_rec(0, 1, 2), _rec(0, 1, 2)], 2, []),
    ],
)
def test_handovers_pair_each_start_with_the_slot_it_took(
    records: list[dict[str, float]], parallel: int, expected: list[tuple[float, float]]
) -> None:
    from benchmarks.p7_worker_reuse import handovers

    got = [v for h in handovers(records, parallel) for v in (h["to_entry_s"], h["to_step_s"])]
    assert got == pytest.approx([v for pair in expected for v in pair])


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not tune_available(), reason="Ray Tune is not installed: pip install 'ray[tune]'")
@pytest.mark.usefixtures("ray_local")
def test_p7_quick_against_ray_tune_with_reused_actors(pg_server: str, pretrained: Path) -> None:
    from benchmarks import p7_worker_reuse

    result = p7_worker_reuse.run(pg_server, quick=True, weights=str(pretrained))
    n_trials, repeats = p7_worker_reuse.SIZES[True]
    tune = result.baselines["ray_tune"]
    assert tune["reuse_actors"] is True and tune["max_concurrent_trials"] == result.settings["parallel"]
    assert tune["resources_per_trial"] == {"cpu": result.settings["cpus_per_trial"]}
    assert len(result.rows) == 3
    for row in result.rows:
        assert row.comparison is not None and row.comparison.repeats >= repeats, row.metric
        assert all(math.isfinite(v) for v in row.comparison.hpo + row.comparison.baseline), row.metric
    main = result.rows[0]
    assert main.comparison is not None
    assert all(0 < v < math.inf for v in main.comparison.hpo + main.comparison.baseline)
    assert main.passed == (main.comparison.ratio <= p7_worker_reuse.GOAL_VS_TUNE)
    assert main.comparison.ratio == statistics.median(main.comparison.ratios)
    for side in ("hpo", "ray_tune"):
        runs = result.raw[side]["records"]
        assert len(runs) == repeats and all(len(r) == n_trials for r in runs), side
        for rec in (r for run in runs for r in run):  # every trial took an optimizer step after entering fit
            assert rec["entered_at"] < rec["first_step_at"] < rec["exited_at"], (side, rec)
    # workers were reused: Tune ran each run's trials on its 2 actors, hpo on fewer processes than trials
    assert all(len({r["pid"] for r in run}) == 2 for run in result.raw["ray_tune"]["records"])
    assert all(len({r["pid"] for r in run}) < n_trials for run in result.raw["hpo"]["records"])
