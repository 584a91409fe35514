"""Search defaults sized to the budget (issue 12 item 3): TPE's start-up trials scale with ``n_trials``;
TPE models parameters jointly and lies constantly for running trials; the setting flows from the config
to the sampler the coordinator builds."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo.config import SweepConfig, load_sweep_config
from hpo.coordinator.settings import CoordinatorSettings
from hpo.errors import ConfigError
from hpo.study import default_startup_trials, make_sampler


@pytest.mark.parametrize(
    ("n_trials", "startup"),
    [(None, 10), (1, 4), (12, 4), (20, 4), (24, 5), (30, 6), (40, 8), (50, 10), (60, 10), (1000, 10)],
)
def test_start_up_trials_are_a_fifth_of_the_budget_within_4_and_10(n_trials: int | None, startup: int) -> None:
    assert default_startup_trials(n_trials) == startup


def _config(tmp_path: Path, text: str) -> SweepConfig:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_sweep_config(path, storage=f"sqlite:///{tmp_path / 'x.db'}", output_dir=str(tmp_path / "runs"))


def test_a_12_trial_sweep_leaves_the_random_phase_after_4_trials(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "study: {n_trials: 12, sampler: {name: tpe, seed: 3}}\n")
    assert cfg.study.startup_trials == 4
    settings = CoordinatorSettings.from_config(cfg, parallel=2, lease=None)
    assert settings.startup_trials == 4
    sampler = make_sampler(settings.sampler, settings.seed, parallel=2, startup_trials=settings.startup_trials)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 4
    assert sampler._multivariate and sampler._constant_liar


def test_start_up_trials_can_be_set_and_only_for_tpe(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "study: {n_trials: 12, sampler: {name: tpe, n_startup_trials: 7}}\n")
    assert cfg.study.startup_trials == 7
    with pytest.raises(ConfigError, match="n_startup_trials"):
        _config(tmp_path, "study: {n_trials: 12, sampler: {name: random, n_startup_trials: 7}}\n")
    with pytest.raises(ConfigError, match="n_startup_trials"):
        _config(tmp_path, "study: {n_trials: 12, sampler: {name: tpe, n_startup_trials: -1}}\n")


def test_one_slot_tpe_does_not_lie_and_proposes_from_the_model_after_start_up() -> None:
    sampler = make_sampler("tpe", 0, parallel=1, startup_trials=4)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert not sampler._constant_liar
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    # after 4 random trials, TPE concentrates near the optimum of a 1-D bowl: random search would not
    study.optimize(lambda t: -((t.suggest_float("x", 0, 1) - 0.8) ** 2), n_trials=30)
    late = [t.params["x"] for t in study.trials[10:]]
    assert sum(abs(x - 0.8) < 0.15 for x in late) >= 0.6 * len(late)


def test_the_pruner_warms_up_past_the_head_only_epochs_unless_told(tmp_path: Path) -> None:
    frozen3 = "train: {freeze_backbone_epochs: 3}\n"
    assert _config(tmp_path, frozen3).pruner.n_warmup_steps == 4
    assert _config(tmp_path, "pruner: {type: percentile, percentile: 25}\n" + frozen3).pruner.n_warmup_steps == 4
    # given explicitly: kept, even when it judges head-only epochs
    assert _config(tmp_path, "pruner: {n_warmup_steps: 1}\n" + frozen3).pruner.n_warmup_steps == 1
    # no frozen epochs: the rule's own default
    default = _config(tmp_path, "pruner: median\n").pruner.n_warmup_steps
    assert default == _config(tmp_path, "train: {freeze_backbone_epochs: 0}\n").pruner.n_warmup_steps
    # the coordinator gets the warmed-up rule
    rule = CoordinatorSettings.from_config(_config(tmp_path, frozen3), parallel=1, lease=None).rule
    assert rule is not None and rule.n_warmup_steps == 4
