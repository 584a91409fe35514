"""hpo's pruners against Optuna's: the same decision, and the same rung attrs, on random studies; the pruner
config's validation; one sweep per pruner type through the real loop."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.config import PrunerConfig, load_sweep_config
from hpo.coordinator.pruning import (
    HyperbandRule,
    MedianRule,
    PercentileRule,
    PrunerRule,
    StepStatistics,
    SuccessiveHalvingRule,
    best_value,
    completed_rungs,
    is_first_in_interval_step,
    promotable,
    sorted_percentile,
)
from hpo.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _random_value(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.03:
        return math.nan
    if r < 0.04:
        return math.inf if rng.random() < 0.5 else -math.inf
    return round(rng.gauss(0.5, 0.2), rng.choice([2, 6]))  # ties happen with 2 decimals


def _steps(rng: random.Random, longest: int) -> list[int]:
    """A trial's reported steps: from 0 or 1, with gaps sometimes (interval reporting)."""
    start = rng.choice([0, 1])
    if longest <= 40 and rng.random() < 0.5:
        return list(range(start, rng.randint(start, longest) + 1))
    return sorted(rng.sample(range(start, longest + 1), rng.randint(1, min(12, longest + 1 - start))))


def _drive(rule: PrunerRule, rng: random.Random, direction: str, n_trials: int, longest: int) -> tuple[int, int]:
    """A random study run by Optuna with ``rule.to_optuna()``: up to four trials at once reporting in turn,
    some pruned when told to, some failed, the rest completed; and twice a "restart": a fresh Optuna pruner
    and a fresh hpo state loaded from the study, as a new coordinator gets. Every ``should_prune`` is
    compared with hpo's decision, and the rung attrs Optuna wrote with the ones hpo asked for.
    Returns (decisions, prunes)."""
    name = f"study-{rng.randrange(10**6)}"
    study = optuna.create_study(study_name=name, direction=direction, pruner=rule.to_optuna())  # type: ignore[arg-type]
    state = rule.new_state(direction, name)
    written: dict[int, dict[str, float]] = {}
    active: list[tuple[optuna.Trial, list[int], dict[int, float]]] = []
    started = decisions = prunes = 0
    restarts = sorted(rng.sample(range(1, 4 * n_trials * longest), 2))
    events = 0
    while started < n_trials or active:
        if started < n_trials and (not active or (len(active) < 4 and rng.random() < 0.3)):
            trial = study.ask()
            active.append((trial, _steps(rng, longest), {}))
            started += 1
            continue
        events += 1
        if restarts and events >= restarts[0]:
            restarts.pop(0)
            study.pruner = rule.to_optuna()  # type: ignore[assignment]
            state = rule.new_state(direction, name)
            states = None if rule.loads is None else tuple(TrialState[s] for s in rule.loads)
            state.load(study.get_trials(deepcopy=False, states=states))
        i = rng.randrange(len(active))
        trial, steps, values = active[i]
        finish: TrialState | None = None
        if len(values) < len(steps):
            step = steps[len(values)]
            v = _random_value(rng)
            trial.report(v, step)
            values[step] = v
            ours = state.report(trial.number, values)
            theirs = trial.should_prune()
            assert ours.prune == theirs, (trial.number, step, values)
            written.setdefault(trial.number, {}).update(ours.system_attrs)
            decisions += 1
            prunes += theirs
            if theirs and rng.random() < 0.6:
                finish = TrialState.PRUNED
        else:
            finish = TrialState.FAIL if rng.random() < 0.1 else TrialState.COMPLETE
        if finish is None:
            continue
        active.pop(i)
        if finish == TrialState.COMPLETE:
            final = [v for v in values.values() if not math.isnan(v)]
            study.tell(trial, final[-1] if final else 0.0)
        else:
            study.tell(trial, state=finish)
        state.finished(trial.number, finish.name, values)
    for t in study.get_trials():
        rungs = {k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")}
        assert rungs == written.get(t.number, {}), t.number
    return decisions, prunes


DIRECTIONS = ["maximize", "minimize"]


def _median(rng: random.Random) -> PrunerRule:
    return MedianRule(rng.randint(0, 6), rng.randint(0, 3), rng.randint(1, 3), rng.randint(1, 4))


def _percentile(rng: random.Random) -> PrunerRule:
    q = rng.choice([0.0, 10.0, 25.0, 33.3, 50.0, 75.0, 90.0, 100.0, round(rng.uniform(0, 100), 3)])
    return PercentileRule(rng.randint(0, 6), rng.randint(0, 3), rng.randint(1, 3), rng.randint(1, 4), percentile=q)


def _halving(rng: random.Random) -> PrunerRule:
    auto = rng.random() < 0.4
    return SuccessiveHalvingRule(
        min_resource="auto" if auto else rng.choice([1, 2, 3]),
        reduction_factor=rng.choice([2, 3, 4]),
        min_early_stopping_rate=rng.choice([0, 0, 1, 2]),
        bootstrap_count=0 if auto else rng.choice([0, 0, 1, 3]),
    )


def _hyperband(rng: random.Random) -> PrunerRule:
    auto = rng.random() < 0.5
    return HyperbandRule(
        min_resource=rng.choice([1, 1, 2]),
        max_resource="auto" if auto else rng.choice([2, 9, 27, 40]),
        reduction_factor=rng.choice([2, 3, 4]),
        bootstrap_count=0 if auto else rng.choice([0, 0, 1, 2]),
    )


#: per type: how to draw its parameters, and the longest trial in steps (successive halving's "auto" needs
#: trials of 200+ steps to pick a minimum resource above 1)
TYPES: dict[str, tuple[Callable[[random.Random], PrunerRule], list[int]]] = {
    "median": (_median, [14]),
    "percentile": (_percentile, [14]),
    "successive_halving": (_halving, [14, 40, 450]),
    "hyperband": (_hyperband, [14, 40, 90]),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's percentile on infinities, in both implementations
@pytest.mark.parametrize("kind", list(TYPES))
def test_decisions_match_optunas_pruner(kind: str) -> None:
    draw, lengths = TYPES[kind]
    decisions = prunes = 0
    for seed in range(24):
        rng = random.Random(f"{kind}-{seed}")
        rule = draw(rng)
        d, p = _drive(rule, rng, DIRECTIONS[seed % 2], rng.randint(4, 22), rng.choice(lengths))
        decisions, prunes = decisions + d, prunes + p
    assert decisions >= 800 and prunes >= 50, (decisions, prunes)


@pytest.mark.parametrize(
    ("step", "steps", "warmup", "interval", "expected"),
    [
        (0, [0], 0, 1, True),
        (3, [0, 1, 2, 3], 0, 1, True),
        (3, [0, 1, 2, 3], 0, 2, False),  # 2 already reported in the interval starting at 2
        (4, [0, 1, 2, 3, 4], 0, 2, True),
        (5, [0, 5], 2, 3, True),
        (5, [0, 4, 5], 2, 3, True),  # 5 opens the interval 5..7
        (6, [0, 5, 6], 2, 3, False),  # 5 was already reported in it
    ],
)
def test_interval_rule_table(step: int, steps: list[int], warmup: int, interval: int, expected: bool) -> None:
    assert is_first_in_interval_step(step, dict.fromkeys(steps, 0.0), warmup, interval) is expected


def test_best_value_ignores_nan_and_follows_direction() -> None:
    assert best_value({1: 0.2, 2: math.nan, 3: 0.5}, "maximize") == 0.5
    assert best_value({1: 0.2, 2: math.nan, 3: 0.5}, "minimize") == 0.2
    assert math.isnan(best_value({1: math.nan}, "maximize"))


def test_statistics_follow_the_trials_added() -> None:
    stats = StepStatistics()
    stats.add_trial({1: 0.2, 2: 0.3})
    assert stats.percentile(1, 50, 1) == 0.2
    stats.add_trial({1: 0.6})
    assert stats.percentile(1, 50, 1) == pytest.approx(0.4)
    assert stats.percentile(2, 50, 1) == 0.3
    assert math.isnan(stats.percentile(2, 50, 2))
    assert stats.n_trials == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's percentile on infinities
def test_percentiles_are_numpys_nanpercentile_to_the_bit() -> None:
    """Any percentile (the percentile rule's, flipped for maximization) off the sorted values, against
    ``np.nanpercentile`` on random steps full of ties, NaN, infinities and signed zeros."""
    rng = random.Random(0)
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0]
    for _ in range(5000):
        values = [
            rng.choice(specials) if rng.random() < 0.3 else round(rng.gauss(0, 1), rng.choice([1, 6]))
            for _ in range(rng.randint(1, 9))
        ]
        q = rng.choice([0.0, 50.0, 100.0, 100 - 33.3, 100 - 25.0, rng.uniform(0, 100)])
        stats = StepStatistics()
        stats.add_trials({3: v} for v in values)
        ours, numpys = stats.percentile(3, q, 1), float(np.nanpercentile(np.array(values, dtype=float), q))
        assert ours == numpys or (math.isnan(ours) and math.isnan(numpys)), (values, q)
    assert sorted_percentile([1.0, 2.0, 4.0], 75.0) == float(np.percentile([1.0, 2.0, 4.0], 75.0))


@pytest.mark.parametrize(
    ("others", "value", "eta", "direction", "expected"),
    [
        ([], 0.1, 3, "maximize", True),  # alone in the rung
        ([0.5], 0.4, 3, "maximize", False),  # fewer than eta competitors: only the best so far goes on
        ([0.5], 0.5, 3, "maximize", True),  # ties promote
        ([0.5], 0.4, 3, "minimize", True),
        ([0.1, 0.2, 0.3, 0.4, 0.5], 0.35, 3, "maximize", False),  # 6 competitors, k = 1: top 2 go on
        ([0.1, 0.2, 0.3, 0.4, 0.5], 0.45, 3, "maximize", True),
        ([0.1, 0.2, 0.3, 0.4, 0.5], 0.15, 3, "minimize", True),
        ([0.1, 0.2, 0.3, 0.4, 0.5], 0.25, 3, "minimize", False),
        ([-math.inf, 0.2, math.inf], math.inf, 2, "maximize", True),
    ],
)
def test_promotion_table(others: list[float], value: float, eta: int, direction: str, expected: bool) -> None:
    assert promotable(others, value, eta, direction) is expected


def test_completed_rungs_reads_optunas_attrs() -> None:
    assert completed_rungs({"completed_rung_0": 0.3, "completed_rung_1": 0.5, "other": 1}) == (2, {0: 0.3, 1: 0.5})
    assert completed_rungs({"completed_rung_1": 0.5}) == (0, {1: 0.5})


# ----------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("none", None),
        ({}, MedianRule(2, 2, 1, 1)),  # hpo's median default (tune_defaults): after 2 trials, from epoch 2
        ({"type": "percentile", "percentile": 25}, PercentileRule(percentile=25.0)),
        ({"type": "percentile", "percentile": 25, "n_min_trials": 3}, PercentileRule(percentile=25.0, n_min_trials=3)),
        ("successive_halving", SuccessiveHalvingRule()),
        ({"type": "successive_halving", "min_resource": 2, "bootstrap_count": 3}, SuccessiveHalvingRule(2, 4, 0, 3)),
        ("hyperband", HyperbandRule()),
        ({"type": "hyperband", "max_resource": 27, "reduction_factor": 3}, HyperbandRule(1, 27, 3, 0)),
    ],
)
def test_pruner_config_builds_optunas_settings(data: Any, expected: PrunerRule | None) -> None:
    assert PrunerConfig.model_validate(data).rule() == expected


BASE = """
study: {name: p, n_trials: 2}
search_space: {lr: {low: 1.0e-4, high: 1.0, log: true}}
train: {epochs: 3}
"""


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        ("{type: successive_halving, reduction_factor: 1}", "pruner.reduction_factor: must be at least 2, got 1"),
        ("{type: hyperband, reduction_factor: 0}", "pruner.reduction_factor: must be at least 2, got 0"),
        ("{type: successive_halving, min_resource: 0}", "pruner.min_resource: must be 'auto' or at least 1, got 0"),
        (
            "{type: successive_halving, min_resource: soon}",
            "pruner.min_resource: must be 'auto' or a whole number of steps, got 'soon'",
        ),
        (
            "{type: successive_halving, min_early_stopping_rate: -1}",
            "pruner.min_early_stopping_rate: must be at least 0, got -1",
        ),
        (
            "{type: successive_halving, bootstrap_count: 2}",
            "pruner.bootstrap_count: must be 0 while min_resource is 'auto'",
        ),
        ("{type: hyperband, bootstrap_count: 2}", "pruner.bootstrap_count: must be 0 while max_resource is 'auto'"),
        ("{type: hyperband, min_resource: auto}", "pruner.min_resource: must be a number of steps"),
        (
            "{type: hyperband, min_resource: 4, max_resource: 3}",
            "pruner.max_resource: must be 'auto' or at least min_resource (4), got 3",
        ),
        ("{type: percentile}", "pruner.percentile: required for type 'percentile'"),
        ("{type: percentile, percentile: 101}", "pruner.percentile: must be between 0 and 100, got 101.0"),
        ("{type: percentile, percentile: 50, interval_steps: 0}", "pruner.interval_steps: must be at least 1, got 0"),
        ("{type: median, n_startup_trials: -1}", "pruner.n_startup_trials: must be at least 0, got -1"),
        (
            "{type: median, reduction_factor: 3}",
            "pruner.reduction_factor: not a parameter of pruner type 'median' (it takes: n_startup_trials,",
        ),
        ("{type: hyperband, n_warmup_steps: 3}", "pruner.n_warmup_steps: not a parameter of pruner type 'hyperband'"),
        (
            "{type: none, n_startup_trials: 3}",
            "pruner.n_startup_trials: not a parameter of pruner type 'none' (it takes: nothing)",
        ),
        ("{type: wilcoxon}", "pruner.type:"),
    ],
)
def test_bad_pruner_settings_name_the_field_and_value(tmp_path: Path, pruner: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + f"pruner: {pruner}\n")
    with pytest.raises(ConfigError) as e:
        load_sweep_config(path, storage=f"sqlite:///{tmp_path / 'never.db'}")
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "never.db").exists()


def test_the_rules_refuse_what_optuna_refuses() -> None:
    with pytest.raises(ValueError, match="reduction_factor: must be at least 2, got 1"):
        SuccessiveHalvingRule(reduction_factor=1)
    with pytest.raises(ValueError, match="percentile: must be between 0 and 100"):
        PercentileRule(percentile=-1.0)
    with pytest.raises(ValueError, match="bootstrap_count"):
        HyperbandRule(bootstrap_count=1)


def test_the_example_config_loads_with_each_pruner() -> None:
    examples = Path(__file__).resolve().parent.parent / "examples" / "pruners.yaml"
    cfg = load_sweep_config(examples, storage="sqlite:///:memory:")
    assert cfg.pruner.type == "hyperband"
    assert isinstance(cfg.pruner.rule(), HyperbandRule)


# ----------------------------------------------------------------------------------------------------------
# One sweep per type through the real loop (PostgreSQL, a local Ray, the synthetic workload)

SWEEP = """
study: {{name: {name}, n_trials: 8, sampler: {{name: random, seed: 1}}}}
pruner: {pruner}
search_space:
  lr: {{low: 1.0e-5, high: 1.0, log: true}}
train: {{epochs: 9, image_size: 32}}
resources: {{cpus_per_trial: 0.5}}
parallel: 2
"""

SWEEP_PRUNERS = {
    "median": "{type: median, n_startup_trials: 2, n_warmup_steps: 1}",
    "percentile": "{type: percentile, percentile: 40, n_startup_trials: 2, n_warmup_steps: 1}",
    "successive_halving": "{type: successive_halving, min_resource: 1, reduction_factor: 2}",
    "hyperband": "{type: hyperband, min_resource: 1, max_resource: 9, reduction_factor: 3}",
}


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("kind", list(SWEEP_PRUNERS))
def test_a_sweep_prunes_with_each_pruner(tmp_path: Path, pg_url: str, kind: str) -> None:
    from hpo.progress import QuietObserver
    from hpo.sweep import run_sweep
    from tests import workloads

    name = kind.replace("_", "-")
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(name=name, pruner=SWEEP_PRUNERS[kind]))
    cfg = load_sweep_config(path, storage=pg_url, output_dir=str(tmp_path / "runs"))
    result = run_sweep(cfg, workload=workloads.synthetic, observer=QuietObserver(), check_data=False)  # type: ignore[arg-type]
    assert result.exit_code == 0 and result.stopped == "target reached"
    study = optuna.load_study(study_name=name, storage=pg_url)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 8, states
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    if kind in ("successive_halving", "hyperband"):  # Optuna's rung attrs, written as its pruner writes them
        assert any("completed_rung_0" in t.system_attrs for t in trials)
        for t in trials:
            rung, values = completed_rungs(t.system_attrs)
            assert sorted(values) == list(range(rung))
            assert all(v in t.intermediate_values.values() for v in values.values())
