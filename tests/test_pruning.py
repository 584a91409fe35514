"""hpo's median rule against Optuna's MedianPruner: the same decision on random studies."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from hpo.coordinator.pruning import MedianRule, StepStatistics, best_value, is_first_in_interval_step, should_prune

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _random_value(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.03:
        return math.nan
    if r < 0.04:
        return math.inf if rng.random() < 0.5 else -math.inf
    return round(rng.gauss(0.5, 0.2), rng.choice([2, 6]))  # ties happen with 2 decimals


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's percentile on infinities, in both implementations
@pytest.mark.parametrize("seed", range(60))
def test_decisions_match_optuna_median_pruner(seed: int) -> None:
    rng = random.Random(seed)
    direction = rng.choice(["maximize", "minimize"])
    rule = MedianRule(
        n_startup_trials=rng.randint(0, 6),
        n_warmup_steps=rng.randint(0, 3),
        interval_steps=rng.randint(1, 3),
        n_min_trials=rng.randint(1, 4),
    )
    pruner = rule.to_optuna()
    study = optuna.create_study(direction=direction, pruner=pruner)  # type: ignore[arg-type]
    stats = StepStatistics()
    decisions = 0
    for _ in range(rng.randint(1, 25)):
        trial = study.ask()
        values: dict[int, float] = {}
        n_steps = rng.randint(1, 12)
        steps = sorted(rng.sample(range(0, 15), n_steps))  # gaps in the steps, as with interval reporting
        pruned = False
        for step in steps:
            v = _random_value(rng)
            trial.report(v, step)
            values[step] = v
            ours = should_prune(rule, stats, values, direction)
            theirs = trial.should_prune()
            assert ours == theirs, (seed, trial.number, step, values)
            decisions += 1
            if theirs and rng.random() < 0.7:
                pruned = True
                break
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif rng.random() < 0.1:
            study.tell(trial, state=TrialState.FAIL)
        else:
            final = [v for v in values.values() if not math.isnan(v)]
            study.tell(trial, final[-1] if final else 0.0)
            stats.add_trial(values)
    assert decisions > 0


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


def test_statistics_cache_is_invalidated_when_a_trial_adds_a_value() -> None:
    stats = StepStatistics()
    stats.add_trial({1: 0.2, 2: 0.3})
    assert stats.percentile(1, 50, 1) == 0.2
    stats.add_trial({1: 0.6})
    assert stats.percentile(1, 50, 1) == pytest.approx(0.4)
    assert stats.percentile(2, 50, 1) == 0.3
    assert math.isnan(stats.percentile(2, 50, 2))
    assert stats.n_trials == 2
