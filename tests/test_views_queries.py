"""The read side's SQL (hpo/views/queries.py) against what Optuna's API says of the same study, on SQLite and
a real PostgreSQL: counts, the best trial, the top-k order, the compute totals, the Pareto front."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo import study as studies
from hpo.views import queries
from hpo.views.status import status_order, summarize
from hpo.views.studies import list_studies, study_status
from storage import close_storage, opened

SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "batch_size": CategoricalDistribution([16, 32, 64]),
    "dropout": FloatDistribution(0.0, 0.5),
    "layers": IntDistribution(1, 4),
}


def _single(url: str, name: str, *, hpo_attrs: bool) -> None:
    """Every state, tied best values, a failed trial with a reason, ±inf values, trials with and without
    hpo's attrs (a stock study has none: epochs come from the curve, durations from the timestamps)."""
    study = optuna.create_study(
        study_name=name, storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    if hpo_attrs:
        study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    for i in range(40):
        t = study.ask(SPACE)
        epochs = 1 + i % 5
        if hpo_attrs and i % 7:
            t.set_user_attr(studies.ATTR_TRAIN_CONFIG, {"epochs": 5, "lr": t.params["lr"]})
            t.set_user_attr(studies.ATTR_EPOCHS_RUN, epochs)
            t.set_user_attr(studies.ATTR_DURATION, 0.5 * epochs)
        value = round(t.params["dropout"], 1)  # ties on purpose
        for step in range(1, epochs + 1):
            t.report(value - 0.01 * (epochs - step), step)
        if i % 9 == 3:
            t.set_user_attr(studies.ATTR_FAIL_REASON, f"worker died ({i})")
            study.tell(t, state=TrialState.FAIL)
        elif i % 6 == 5:
            study.tell(t, state=TrialState.PRUNED)
        elif i == 8:
            study.tell(t, float("-inf"))  # stored as INF_NEG, never ranked
        elif i % 11 == 10:
            pass  # left RUNNING
        else:
            study.tell(t, value)
    study.enqueue_trial({"lr": 0.01})  # WAITING
    close_storage(study._storage)


def _multi(url: str, name: str) -> None:
    study = optuna.create_study(
        study_name=name,
        storage=url,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=2),
    )
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    study.set_user_attr(studies.ATTR_OBJECTIVES, ["val_acc", "latency_ms"])
    for i in range(60):
        t = study.ask(SPACE)
        t.set_user_attr(studies.ATTR_CURVE, {"1": 0.1, "2": 0.2})
        if i % 10 == 9:
            study.tell(t, state=TrialState.PRUNED)
        else:
            acc = round(t.params["dropout"], 1)
            study.tell(t, [acc, round(t.params["lr"] * 10, 1) if i != 7 else float("inf")])
    close_storage(study._storage)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpo.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def test_status_by_sql_equals_status_by_optuna(url: str) -> None:
    _single(url, "hpo", hpo_attrs=True)
    _single(url, "stock", hpo_attrs=False)
    _multi(url, "mo")
    for name in ("hpo", "stock", "mo"):
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials()
        direction = studies.primary_direction(study)
        ref = summarize(
            name,
            str(study.user_attrs.get(studies.ATTR_METRIC, "value")),
            direction,
            trials,
            objectives=studies.objectives(study),
            front=studies.pareto_front(study),
        )
        got = study_status(url, name)  # every row: the SQL path in full
        assert got == ref, name
        top = study_status(url, name, limit=7)
        assert top.rows == status_order(ref.rows, direction)[:7]
        assert (top.counts, top.best, top.epochs_run, top.epochs_budget, top.pareto) == (
            ref.counts,
            ref.best,
            ref.epochs_run,
            ref.epochs_budget,
            ref.pareto,
        )
        assert top.trial_seconds == pytest.approx(ref.trial_seconds)
        assert top.n_trials == len(trials)
        if len(study.directions) == 1:
            assert top.best is not None and top.best["number"] == study.best_trial.number
        else:
            assert [p["number"] for p in top.pareto] == sorted(t.number for t in study.best_trials)
        close_storage(study._storage)
    # what the fixtures are for: the cases are there
    ref_hpo = study_status(url, "hpo")
    assert all(ref_hpo.counts[s.name] for s in TrialState)
    assert sum(r.value == ref_hpo.best["value"] for r in ref_hpo.rows if r.state == "COMPLETE") > 1  # type: ignore[index]
    assert any(r.reason for r in ref_hpo.rows)


def test_studies_by_sql_equal_optuna(url: str) -> None:
    _single(url, "hpo", hpo_attrs=True)
    _multi(url, "mo")
    optuna.create_study(study_name="empty", storage=url, direction="minimize")
    rows = {r["study"]: r for r in list_studies(url)}
    assert list(rows) == [s.study_name for s in optuna.get_all_study_summaries(url, include_best_trial=False)]
    for name in ("hpo", "mo", "empty"):
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials()
        best = studies.select_best(trials, studies.primary_direction(study))
        assert rows[name]["counts"] == studies.state_counts(trials)
        assert rows[name]["n_trials"] == len(trials)
        assert rows[name]["best_trial"] == (None if best is None else best.number)
        assert rows[name]["best_value"] == (None if best is None else best.values[0])
        assert rows[name]["metric"] == study.user_attrs.get(studies.ATTR_METRIC)
        close_storage(study._storage)
    assert rows["hpo"]["best_trial"] == optuna.load_study(study_name="hpo", storage=url).best_trial.number


def test_pareto_front_keeps_ties_and_drops_dominated() -> None:
    points = {
        1: (0, [0.9, 5.0]),
        2: (1, [0.9, 5.0]),  # a duplicate of a front point: on the front too
        3: (2, [0.8, 5.0]),  # dominated by 1
        4: (3, [0.5, 1.0]),
        5: (4, [0.5, float("inf")]),
    }
    assert queries.pareto_front(points, ["maximize", "minimize"]) == [1, 2, 4]


def test_duration_falls_back_to_timestamps(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _single(url, "stock", hpo_attrs=False)
    with opened(url) as storage:
        engine = queries.engine_of(storage)
        assert engine is not None
        with engine.connect() as conn:
            sid = queries.study_id(conn, "stock")
            assert sid is not None
            rows = queries.facts(conn, sid)
    trials = optuna.load_study(study_name="stock", storage=url).get_trials()
    for f, t in zip(rows, trials, strict=True):
        assert f.number == t.number and f.epochs_run == len(t.intermediate_values) and f.max_epochs is None
        if t.datetime_complete is not None and t.datetime_start is not None:
            assert f.duration_s == pytest.approx((t.datetime_complete - t.datetime_start) / dt.timedelta(seconds=1))


def test_read_commands_create_nothing_and_name_what_is_missing(tmp_path: Path) -> None:
    """The read path opens no Optuna storage: a missing file stays missing, an empty database is named as
    such, and an unknown study lists the ones there are."""
    from hpo.errors import StudyNotFoundError
    from storage import StorageError

    missing = tmp_path / "none.db"
    with pytest.raises(StorageError, match="no such file"):
        list_studies(f"sqlite:///{missing}")
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    import sqlite3

    sqlite3.connect(empty).close()
    with pytest.raises(StorageError, match="holds no Optuna study yet"):
        study_status(f"sqlite:///{empty}", "x")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _single(url, "hpo", hpo_attrs=True)
    with pytest.raises(StudyNotFoundError, match=r"study 'nope' not found \(studies in this storage: hpo\)"):
        study_status(url, "nope")
