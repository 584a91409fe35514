"""P3's quick pass: hpo's dispatch efficiency against Ray Tune run as its docs recommend (``reuse_actors=True``)
and stock Optuna, each a repeated, interleaved comparison. Timings on a shared machine are noisy: what is
asserted is the method (rows, baseline settings, repeats, verdicts from the medians), not who wins."""

from __future__ import annotations

import math
import statistics

import pytest

from benchmarks.common import tune_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not tune_available(), reason="Ray Tune is not installed: pip install 'ray[tune]'"),
]


@pytest.mark.usefixtures("ray_local")
def test_p3_quick_against_ray_tune_with_reused_actors(pg_server: str) -> None:
    from benchmarks import p3_dispatch

    result = p3_dispatch.run(pg_server, quick=True)
    n_trials, repeats = p3_dispatch.SIZES[True]
    tune = result.baselines["ray_tune"]
    assert tune["reuse_actors"] is True
    assert tune["max_concurrent_trials"] == result.settings["parallel"] == 2
    assert tune["resources_per_trial"] == {"cpu": result.settings["cpus_per_trial"]}
    assert result.settings["n_trials"] == n_trials and result.settings["repeats"] == repeats

    assert len(result.rows) == 4, [r.metric for r in result.rows]
    for row in result.rows:  # every row is a timing comparison with its samples
        cmp = row.comparison
        assert cmp is not None and cmp.repeats >= repeats, row.metric
        assert all(math.isfinite(v) and v > 0 for v in cmp.hpo), row.metric
        assert all(math.isfinite(v) and v > 0 for v in cmp.baseline), row.metric

    ideal_row, tune_row = result.rows[0], result.rows[1]
    assert "Ray Tune" in tune_row.metric and "reuse_actors=True" in tune_row.metric, tune_row.metric
    ideal = n_trials * 0.5 / 2
    assert ideal_row.comparison is not None and set(ideal_row.comparison.baseline) == {ideal}
    assert ideal_row.comparison.repeats == 2 * repeats  # every hpo run: the Tune pairs and the Optuna pairs
    # the verdicts are the medians of the per-pair ratios against the goals
    assert ideal_row.passed == (ideal_row.comparison.ratio <= p3_dispatch.GOAL)
    assert tune_row.comparison is not None
    assert tune_row.passed == (tune_row.comparison.ratio <= p3_dispatch.GOAL_VS_TUNE)
    assert tune_row.comparison.ratio == statistics.median(
        a / b for a, b in zip(tune_row.comparison.hpo, tune_row.comparison.baseline, strict=True)
    )
    # every trial ran: no side finishes faster than its trials' sleeps allow
    assert min(ideal_row.comparison.hpo) >= ideal and min(tune_row.comparison.baseline) >= ideal
    assert result.raw["vs_ray_tune"]["repeats"] == repeats
