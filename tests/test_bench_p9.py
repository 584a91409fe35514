"""P9's quick pass (100 and 1,000 trials): every row is there, and what hpo status printed agrees with Optuna."""

from __future__ import annotations

import pytest

from benchmarks.common import Result


@pytest.mark.postgres
def test_p9_read_side_quick(pg_server: str) -> None:
    from benchmarks import p9_read_side

    result: Result = p9_read_side.run(pg_server, quick=True)
    metrics = [r.metric for r in result.rows]
    for name in ("hpo studies", "hpo status", "hpo report", "hpo report size", "growth"):
        assert any(m.startswith(name) for m in metrics), metrics
    for r in result.rows[:3]:
        assert r.comparison is not None and r.comparison.repeats >= 2
    for n in ("100", "1000"):
        raw = result.raw[n]
        assert raw["status_counts"]["COMPLETE"] == int(n)
        assert raw["report_bytes"] > 0 and raw["dashboard_bytes"] > 0
    assert set(result.baselines) == {"optuna_cli", "optuna_dashboard"}


def test_status_best_is_optunas_best_trial(tmp_path: object) -> None:
    import optuna

    from benchmarks import p9_read_side
    from hpo.views.studies import study_status

    url = f"sqlite:///{tmp_path}/p9.db"
    p9_read_side.build_study(url, 500)
    st = study_status(url, p9_read_side.NAME, limit=10)
    best = optuna.load_study(study_name=p9_read_side.NAME, storage=url).best_trial
    assert st.best is not None and (st.best["number"], st.best["value"]) == (best.number, best.value)
    assert st.best["params"] == best.params and st.n_trials == 500 and len(st.rows) == 10
    assert st.rows[0].number == best.number and st.epochs_run == 500 * p9_read_side.STEPS
