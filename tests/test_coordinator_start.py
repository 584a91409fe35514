"""A coordinator's start reads only what its pruner needs, by a fixed number of narrow queries whatever the
study's size; what it loads equals what Optuna's own reads give; the first ask's whole-study read
(``fill_trial_cache``) puts in Optuna's cache exactly the trials Optuna's read would. On real PostgreSQL."""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from benchmarks.p1_prune_latency import build_study
from hpo.coordinator import reads
from hpo.coordinator.coordinator import Coordinator
from hpo.coordinator.messages import Outcome
from hpo.coordinator.pruning import (
    HyperbandRule,
    MedianRule,
    PercentileRule,
    PrunerRule,
    SuccessiveHalvingRule,
)
from hpo.coordinator.settings import CoordinatorSettings
from storage import close_storage, open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.postgres

RULES: list[PrunerRule] = [
    MedianRule(n_startup_trials=2, n_warmup_steps=1),
    PercentileRule(percentile=25.0),
    SuccessiveHalvingRule(),
    HyperbandRule(),
]
#: what Optuna's whole-trial read also reads, and no pruner needs
TABLES_START_SKIPS = {"trial_params", "trial_values", "trial_user_attributes"}


def _settings(url: str, name: str, rule: PrunerRule, *, multi_objective: bool = False) -> CoordinatorSettings:
    return CoordinatorSettings(
        storage_url=url,
        study_name=name,
        metric="val_acc",
        direction="maximize",
        distributions={"lr": FloatDistribution(1e-5, 1.0, log=True)},
        base_config={},
        fixed_params={},
        checkpoint_root=tempfile.gettempdir() + "/hpo-test-start",
        sampler="tpe",
        seed=0,
        rule=rule,
        multi_objective=multi_objective,
    )


class Statements:
    """Every SQL statement the process sends while it is open (a SQLAlchemy event on all engines)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __enter__(self) -> Statements:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(statement)

    def tables(self) -> set[str]:
        import re

        return {m for s in self.sent for m in re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", s, flags=re.I)}


@pytest.fixture(scope="module")
def sized(pg_server: str) -> Iterator[tuple[str, dict[int, str]]]:
    """One database with median-rule studies of 500 and 3,000 COMPLETE trials x 20 steps (bulk-inserted)."""
    from storage.postgres import create_database, database_url, drop_database

    url = database_url(pg_server, f"hpo_test_start_{random.randrange(16**8):08x}")
    create_database(url)
    names = {n: f"start-{n}" for n in (500, 3_000)}
    for n, name in names.items():
        build_study(url, name, n, seed=n)
    yield url, names
    drop_database(url)


@pytest.mark.parametrize("rule", [RULES[0], RULES[2]], ids=["median", "successive_halving"])
def test_start_sends_the_same_few_narrow_queries_at_500_and_3000_trials(
    sized: tuple[str, dict[int, str]], rule: PrunerRule
) -> None:
    """Optuna's ``get_trials`` (what start used to do) sends more statements as the study grows (its
    ``selectinload`` reads 500 trials' rows per statement, five tables each) and reads params, values and user
    attrs no pruner needs: start must do neither."""
    url, names = sized
    sent: dict[int, list[str]] = {}
    for n, name in names.items():
        with Statements() as seen:
            Coordinator(_settings(url, name, rule)).close()
        sent[n] = seen.sent
        assert not seen.tables() & TABLES_START_SKIPS, seen.tables()
    assert len(sent[3_000]) == len(sent[500]), (len(sent[500]), len(sent[3_000]))
    assert len(sent[3_000]) <= 30


def test_the_first_ask_reads_the_study_once_in_a_fixed_number_of_queries(sized: tuple[str, dict[int, str]]) -> None:
    url, names = sized
    counts = {}
    for n, name in names.items():
        coord = Coordinator(_settings(url, name, RULES[0]))
        try:
            with Statements() as seen:
                asked = coord.ask()
            counts[n] = len(seen.sent)
            with Statements() as again:
                second = coord.ask()
            assert len(again.sent) < len(seen.sent)  # the cache holds the study: only what changed is read
            for a in (asked, second):
                coord.tell(a.trial_id, Outcome("FAIL", None, "test probe"))
        finally:
            coord.close()
    assert counts[3_000] == counts[500], counts


# ----------------------------------------------------------------------------------------------------------
# What is read equals what Optuna reads, on a study with every state, NaN and infinities, rungs and curves


def _value(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.05:
        return math.nan
    if r < 0.1:
        return math.inf if rng.random() < 0.5 else -math.inf
    return round(rng.gauss(0.5, 0.2), rng.choice([2, 6]))


def _varied_study(url: str, name: str, n: int = 80) -> int:
    rng = random.Random(7)
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        dists = {
            "lr": FloatDistribution(1e-5, 1.0, log=True),
            "bs": IntDistribution(8, 64, step=8),
            "opt": CategoricalDistribution(["sgd", "adam"]),
        }
        trials = []
        for number in range(n):
            state = rng.choice([TrialState.COMPLETE] * 5 + [TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING])
            steps = sorted(rng.sample(range(0, 12), rng.randint(0, 8)))
            ivs = {s: _value(rng) for s in steps}
            # Optuna writes no rung for a NaN value (it prunes first)
            rungs = [v for v in (_value(rng) for _ in range(rng.randint(0, 3))) if not math.isnan(v)]
            system: dict[str, Any] = {f"completed_rung_{r}": v for r, v in enumerate(rungs)}
            user: dict[str, Any] = {"note": rng.random()}
            if number % 9 == 0:  # a multi-objective trial's curve: hpo's user attr, no intermediate values
                ivs = {}
                user["intermediate_values"] = {str(s): rng.choice([0.5, "nan", "inf"]) for s in range(1, 5)}
            params = {
                "lr": 10 ** rng.uniform(-5, 0),
                "bs": rng.choice(range(8, 65, 8)),
                "opt": rng.choice(["sgd", "adam"]),
            }
            trials.append(
                optuna.trial.create_trial(
                    state=state,
                    value=rng.choice([0.5, math.inf, -math.inf]) if state == TrialState.COMPLETE else None,
                    params=params,
                    distributions=dists,
                    intermediate_values=ivs,
                    user_attrs=user,
                    system_attrs=system,
                )
            )
        study.add_trials(trials)
        return int(study._study_id)
    finally:
        close_storage(storage)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, dicts whatever their order (``repr`` of plain data, keys sorted)."""
    return repr(_sorted(a)) == repr(_sorted(b))


def _sorted(x: Any) -> Any:
    if isinstance(x, dict):
        return sorted((repr(k), _sorted(v)) for k, v in x.items())
    if isinstance(x, list | tuple):
        return [_sorted(v) for v in x]
    return x


def _state_view(state: Any) -> dict[str, Any]:
    if hasattr(state, "stats"):
        return {"n": state.stats.n_trials, "sorted": state.stats._sorted, "counts": state.stats._counts}
    out = {"rung": state._rung, "max_step": state._max_complete_step}
    if hasattr(state, "rungs"):
        out["rungs"] = state.rungs.values
    else:
        state.initialize()
        out["brackets"] = [r.values for r in state.brackets]
    return out


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
@pytest.mark.parametrize("multi_objective", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("rule", RULES, ids=[type(r).__name__ for r in RULES])
def test_a_state_loaded_at_start_equals_one_loaded_from_optunas_trials(
    pg_url: str, tmp_path: Any, rule: PrunerRule, multi_objective: bool, backend: str
) -> None:
    """PostgreSQL sorts each step's values in one array; SQLite by rows: both equal Optuna's trials loaded."""
    from hpo import study as studies

    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path}/varied.db"
    study_id = _varied_study(url, "varied")
    storage = open_storage(url)
    try:
        states = None if rule.loads is None else tuple(TrialState[s] for s in rule.loads)
        trials = storage.get_all_trials(study_id, deepcopy=False, states=states)
        expected = rule.new_state("maximize", "varied")
        expected.load([studies.with_curve(t) for t in trials] if multi_objective else trials)
        got = rule.new_state("maximize", "varied")
        reads.load_state(got, storage.engine, study_id, rule, multi_objective=multi_objective)
    finally:
        close_storage(storage)
    assert _same(_state_view(got), _state_view(expected))


def test_the_first_ask_caches_what_optunas_read_would(pg_url: str) -> None:
    study_id = _varied_study(pg_url, "varied")
    storage = open_storage(pg_url)
    try:
        theirs = storage._get_trials(study_id, None, set(), -1)
        ours = reads.all_trials(storage.engine, study_id)
        assert _same([t.__dict__ for t in ours], [t.__dict__ for t in theirs])
    finally:
        close_storage(storage)

    # then Optuna's cache goes on from there: trials created or finished later are read as Optuna reads them
    coord = Coordinator(_settings(pg_url, "varied", RULES[0]))
    try:
        cache = coord._study._storage
        asked = coord.ask()
        running = [t for t in theirs if t.state == TrialState.RUNNING]
        other = optuna.load_study(study_name="varied", storage=pg_url)
        other.tell(running[0].number, state=TrialState.FAIL)
        other.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0))
        close_storage(other._storage)
        after = {t.number: t.state for t in cache.get_all_trials(study_id, deepcopy=False)}
        assert after[running[0].number] == TrialState.FAIL
        assert after[asked.number] == TrialState.RUNNING
        assert len(after) == len(theirs) + 2
        coord.tell(asked.trial_id, Outcome("FAIL", None, "test probe"))
    finally:
        coord.close()
