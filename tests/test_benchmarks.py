"""The benchmark suite's quick pass (``python -m benchmarks --quick`` sizes): each benchmark runs and writes
well-formed rows (every key, the baseline's settings, a verdict per goal computed from its own figures), and
P1's decisions are identical to Optuna's pruners (correctness). No figure is asserted: the machine is shared
and noisy, so goals are judged by ``make bench``, not by the test suite."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

from benchmarks.common import Result


def _explain(result: Result) -> str:
    rows = "\n".join(
        f"  {r.metric}: hpo {r.hpo} | baseline {r.baseline} | {r.ratio} | goal {r.goal}" for r in result.rows
    )
    return f"{result.key} {result.title}\n{rows}\n" + "\n".join(result.notes)


def assert_well_formed(result: Result) -> None:
    """Every row names its metric and goal, carries a verdict (None only for information rows), and every
    timing comparison has finite, positive samples on both sides whose median ratio is the one shown."""
    assert result.rows, _explain(result)
    for row in result.rows:
        assert row.metric and row.goal and row.hpo, row
        assert row.passed in (True, False, None), row
        assert (row.passed is None) == row.goal.startswith(("information", "lower is better")), row
        cmp = row.comparison
        if cmp is not None:
            assert cmp.repeats >= 1, row.metric
            assert all(math.isfinite(v) and v > 0 for v in cmp.hpo + cmp.baseline), row.metric
            assert cmp.ratio == statistics.median(cmp.ratios), row.metric


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_p1_prune_decision_rows_and_identical_decisions(pg_server: str) -> None:
    from benchmarks import p1_prune_latency

    result = p1_prune_latency.run(pg_server, quick=True)
    assert result.raw["mismatches"] == 0, _explain(result)  # correctness: the same decisions as Optuna's pruners
    assert result.raw["decisions"] >= 300
    assert_well_formed(result)
    for n in (100, 1_000):
        for side in ("hpo", "optuna_warm"):
            assert math.isfinite(result.raw["summary"][n][side]["p95"]), (n, side)
    assert any("warm p95 growth" in r.metric and r.passed is not None for r in result.rows), _explain(result)
    identical = [r for r in result.rows if "decisions identical" in r.metric]
    assert identical and all(r.passed is True for r in identical), _explain(result)


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_p2_control_plane_rows(pg_server: str) -> None:
    from benchmarks import p2_control_plane

    result = p2_control_plane.run(pg_server, quick=True)
    assert_well_formed(result)
    (row,) = result.rows
    assert row.comparison is not None and row.comparison.repeats == 3
    assert result.raw["ratio"] == row.comparison.ratio  # the median of the paired ratios
    assert math.isfinite(result.raw["ratio"])
    assert row.passed == (row.comparison.ratio <= p2_control_plane.QUICK_GATE)  # the verdict from its own figures
    assert result.baselines["optuna_study_optimize"]["pruner"]["n_warmup_steps"] == 2


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_coordinator_writes_what_optuna_writes(backend: str, tmp_path: Path, pg_url: str) -> None:
    """The coordinator's one-statement writes (intermediate values, user attrs) against Optuna's own: the same
    values read back (NaN, infinities, an overwritten step), and the same error for a finished trial."""
    from hpo.coordinator.coordinator import Coordinator
    from hpo.coordinator.messages import Outcome
    from hpo.coordinator.settings import CoordinatorSettings
    from storage import close_storage, open_storage

    url = f"sqlite:///{tmp_path}/w.db" if backend == "sqlite" else pg_url
    storage = open_storage(url)
    optuna.create_study(study_name="w", storage=storage, direction="maximize")
    close_storage(storage)
    coord = Coordinator(
        CoordinatorSettings(
            storage_url=url,
            study_name="w",
            metric="val_acc",
            direction="maximize",
            distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)},
            base_config={"epochs": 9},
            fixed_params={},
            checkpoint_root=str(tmp_path),
        )
    )
    try:
        asked = coord.ask()
        values = {1: 0.25, 2: math.nan, 3: math.inf, 4: -math.inf, 5: 0.5}
        for step, v in values.items():
            coord.report(asked.trial_id, step, {"val_acc": v})
        coord.report(asked.trial_id, 1, {"val_acc": 0.75})  # a replayed epoch overwrites its value
        coord.tell(asked.trial_id, Outcome("COMPLETE", 0.75, None, {"epochs_run": 5, "metrics": {"val_acc": 0.75}}))
        trial = optuna.load_study(study_name="w", storage=url).trials[0]
        got = trial.intermediate_values
        assert got[1] == 0.75 and math.isnan(got[2]) and got[3] == math.inf and got[4] == -math.inf and got[5] == 0.5
        assert trial.user_attrs["epochs_run"] == 5 and trial.user_attrs["metrics"] == {"val_acc": 0.75}
        assert trial.user_attrs["checkpoint_dir"].endswith("trial-00000") and trial.user_attrs["attempt"] == 1
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            coord._writes.intermediate_value(asked.trial_id, 6, 0.1)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            coord._writes.user_attrs(asked.trial_id, {"late": 1})
    finally:
        coord.close()
