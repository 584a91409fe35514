"""Conditional parameters (``when:``): parsed and validated as data, sampled in dependency order, and end to
end through the real sweep loop and coordinator on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from hpo.space import SpaceError, parse_space, sample
from trials.config import searchable_fields

FIELDS = searchable_fields()


def _space(spec: dict) -> object:
    return parse_space(spec, FIELDS, defaults=False)


def test_a_condition_orders_its_parameter_first_and_round_trips() -> None:
    space = _space(
        {"momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}}, "optimizer": ["adamw", "sgd"]}
    )
    assert list(space.distributions) == ["optimizer", "momentum"]
    assert space.conditions == {"momentum": {"optimizer": ("sgd",)}}
    assert _space(space.to_spec()) == space


@pytest.mark.parametrize(
    ("values", "expected"),
    [({"optimizer": "sgd"}, {"optimizer", "momentum"}), ({"optimizer": "adamw"}, {"optimizer"})],
)
def test_only_active_parameters_are_suggested(values: dict, expected: set) -> None:
    space = _space(
        {"optimizer": ["adamw", "sgd"], "momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}}}
    )
    got = sample(space.distributions, space.conditions, {}, lambda name, dist: values.get(name, 0.9))
    assert set(got) == expected


@pytest.mark.parametrize(("scheduler", "searched"), [("cosine", True), ("none", False)])
def test_a_condition_on_a_fixed_training_field_reads_the_base_config(scheduler: str, searched: bool) -> None:
    space = _space({"warmup_epochs": {"low": 0, "high": 2, "when": {"scheduler": ["cosine"]}}})
    got = sample(space.distributions, space.conditions, {"scheduler": scheduler}, lambda n, d: 1)
    assert ("warmup_epochs" in got) is searched


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"momentum": {"low": 0.8, "high": 0.99, "when": {"nonsense": 1}}}, "momentum.when.nonsense"),
        (
            {"lr": {"low": 1e-4, "high": 1e-1}, "momentum": {"low": 0.8, "high": 0.99, "when": {"lr": 0.01}}},
            "momentum.when.lr",
        ),
        (
            {"optimizer": ["adamw", "sgd"], "momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": "rmsprop"}}},
            "momentum.when.optimizer",
        ),
        ({"momentum": {"low": 0.8, "high": 0.99, "when": {"momentum": 0.9}}}, "momentum.when.momentum"),
        ({"momentum": {"value": 0.9, "when": {"optimizer": "sgd"}}}, "momentum.when"),
        ({"momentum": {"low": 0.8, "high": 0.99, "when": []}}, "momentum.when"),
        (
            {
                "optimizer": {"choices": ["adamw", "sgd"], "when": {"scheduler": "cosine"}},
                "scheduler": {"choices": ["cosine", "none"], "when": {"optimizer": "sgd"}},
            },
            ".when",
        ),
    ],
)
def test_broken_conditions_name_the_field(spec: dict, path: str) -> None:
    with pytest.raises(SpaceError) as e:
        _space(spec)
    assert path in e.value.path or (path == ".when" and "cycle" in str(e.value)), str(e.value)


def test_a_cycle_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "search_space:\n"
        "  optimizer: {choices: [adamw, sgd], when: {scheduler: cosine}}\n"
        "  scheduler: {choices: [cosine, none], when: {optimizer: sgd}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"search_space\.\w+\.when: conditions form a cycle, got '(optimizer|scheduler) -> "
    ):
        load_sweep_config(tmp_path / "c.yaml")


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_a_conditional_sweep_suggests_momentum_for_sgd_trials_only(tmp_path: Path, pg_url: str) -> None:
    from hpo.progress import QuietObserver
    from hpo.sweep.run import run_sweep
    from hpo.views.export import export_best
    from tests import workloads

    path = tmp_path / "cond.yaml"
    path.write_text(
        "study: {name: cond, n_trials: 10, sampler: {name: tpe, seed: 0}}\npruner: none\n"
        "search_space:\n  optimizer: [adamw, sgd]\n  lr: {low: 1.0e-4, high: 1.0, log: true}\n"
        "  momentum: {low: 0.8, high: 0.99, when: {optimizer: sgd}}\n"
        "train: {epochs: 2, image_size: 32}\n"
    )
    cfg = load_sweep_config(path, storage=pg_url, output_dir=str(tmp_path / "runs"), parallel=2)
    result = run_sweep(cfg, workload=workloads.synthetic, observer=QuietObserver(), check_data=False)
    assert result.exit_code == 0
    trials = optuna.load_study(study_name="cond", storage=pg_url).trials
    by_opt = {o: [t for t in trials if t.params["optimizer"] == o] for o in ("adamw", "sgd")}
    assert by_opt["adamw"] and by_opt["sgd"], [t.params for t in trials]
    assert all("momentum" not in t.params for t in by_opt["adamw"])
    assert all(
        "momentum" in t.params and isinstance(t.distributions["momentum"], FloatDistribution) for t in by_opt["sgd"]
    )
    assert all(t.user_attrs["train_config"]["momentum"] == 0.9 for t in by_opt["adamw"])  # the field's default
    assert isinstance(by_opt["sgd"][0].distributions["optimizer"], CategoricalDistribution)
    exported = export_best(pg_url, "cond", tmp_path / "best.yaml")
    assert "momentum:" in exported.text  # the full training config, conditional field included
