"""Search-space parsing: a table of YAML specs and the Optuna distributions they must become."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.space import DEFAULT_SPACE, SpaceError, parse_param, parse_space, trial_config
from trials.config import searchable_fields

FIELDS = searchable_fields()


@pytest.mark.parametrize(
    ("name", "entry", "expected"),
    [
        ("lr", {"low": 1e-5, "high": 1e-1, "log": True}, FloatDistribution(1e-5, 1e-1, log=True)),
        ("dropout", {"low": 0, "high": 0.5}, FloatDistribution(0.0, 0.5)),
        ("dropout", {"low": 0, "high": 0.5, "step": 0.1}, FloatDistribution(0.0, 0.5, step=0.1)),
        ("epochs", {"low": 2, "high": 8}, IntDistribution(2, 8)),
        ("epochs", {"low": 2, "high": 8, "step": 2}, IntDistribution(2, 8, step=2)),
        ("batch_size", {"low": 16, "high": 256, "log": True}, IntDistribution(16, 256, log=True)),
        ("batch_size", {"choices": [16, 32, 64]}, CategoricalDistribution((16, 32, 64))),
        ("batch_size", [16, 32], CategoricalDistribution((16, 32))),
        ("optimizer", ["adamw", "sgd"], CategoricalDistribution(("adamw", "sgd"))),
        ("amp", ["bf16", "fp16"], CategoricalDistribution(("bf16", "fp16"))),
        ("early_stopping.patience", {"low": 1, "high": 5}, IntDistribution(1, 5)),
        ("lr", {"low": 1, "high": 2}, FloatDistribution(1.0, 2.0)),  # ints are fine for a float field
    ],
)
def test_ranges_and_choices(name: str, entry: object, expected: object) -> None:
    param = parse_param(name, entry, FIELDS[name])
    assert param.distribution == expected
    assert not param.is_fixed


@pytest.mark.parametrize(
    ("name", "entry", "value"),
    [
        ("dropout", 0.1, 0.1),
        ("dropout", {"value": 0.25}, 0.25),
        ("epochs", 4, 4),
        ("epochs", 4.0, 4),
        ("optimizer", "sgd", "sgd"),
        ("weights", None, None),
    ],
)
def test_fixed_values(name: str, entry: object, value: object) -> None:
    param = parse_param(name, entry, FIELDS[name])
    assert param.is_fixed and param.value == value and type(param.value) is type(value)


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"lr": {"low": 0.1, "high": 0.01}}, "lr", "low must be less than high"),
        ({"lr": {"low": 0.1, "high": 0.1}}, "lr", "low must be less than high"),
        ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, "weight_decay.low", "> 0 for a log range"),
        ({"batch_size": {"choices": []}}, "batch_size.choices", "non-empty list"),
        ({"batch_size": []}, "batch_size", "non-empty list"),
        ({"batch_size": [16, 16]}, "batch_size", "must not repeat"),
        ({"batch_size": {"low": 8.5, "high": 64}}, "batch_size.low", "must be an integer"),
        ({"lr": {"low": 1e-4}}, "lr.high", "required"),
        ({"lr": {"low": 1e-4, "high": 1, "log": "yes"}}, "lr.log", "true or false"),
        ({"lr": {"low": 1e-4, "high": 1, "log": True, "step": 0.1}}, "lr.step", "cannot be combined with log"),
        ({"dropout": {"low": 0, "high": 0.5, "step": -0.1}}, "dropout.step", "must be positive"),
        ({"dropout": {"low": 0, "high": 0.5, "step": 1}}, "dropout.step", "larger than the range"),
        ({"lr": {"low": 1e-4, "high": 1, "scale": "log"}}, "lr.scale", "unknown key"),
        ({"lr": {"choices": [0.1], "low": 0}}, "lr.low", "cannot be combined with choices"),
        ({"optimizer": {"low": 0, "high": 1}}, "optimizer", "give choices or a fixed value"),
        ({"lr": "fast"}, "lr", "finite number"),
        ({"lr": float("nan")}, "lr", "finite number"),
        ({"amp": 1}, "amp", "must be a string"),
        ({"colour": [1, 2]}, "colour", "not a searchable training-config field"),
        ({"metric": ["val_acc", "val_loss"]}, "metric", "not a searchable"),
        ({"dataset": {"choices": [1]}}, "dataset", "not a searchable"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(spec, FIELDS)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_defaults_are_the_five_hyperparameters_and_can_be_fixed() -> None:
    space = parse_space(None, FIELDS)
    assert set(space.distributions) == {"lr", "batch_size", "dropout", "weight_decay", "aug_strength"}
    assert space.distributions["lr"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert space.distributions["batch_size"] == CategoricalDistribution((16, 32, 64, 128))
    fixed = parse_space({"dropout": 0.0, "label_smoothing": [0.0, 0.1]}, FIELDS)
    assert fixed.fixed == {"dropout": 0.0}
    assert set(fixed.distributions) == {"lr", "batch_size", "weight_decay", "aug_strength", "label_smoothing"}
    assert set(parse_space({}, FIELDS, defaults=False).params) == set()
    assert set(DEFAULT_SPACE) == {"lr", "batch_size", "dropout", "weight_decay", "aug_strength"}


def test_suggest_and_spec_round_trip() -> None:
    spec = {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "epochs": {"low": 2, "high": 6, "step": 2},
        "optimizer": ["adamw", "sgd"],
        "dropout": 0.3,
    }
    space = parse_space(spec, FIELDS, defaults=False)
    assert parse_space(space.to_spec(), FIELDS, defaults=False) == space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask(space.distributions)  # as the coordinator asks
        params = trial_config({}, space.fixed, trial.params)
        assert 1e-4 <= params["lr"] <= 1e-1
        assert params["epochs"] in (2, 4, 6)
        assert params["optimizer"] in ("adamw", "sgd")
        assert params["dropout"] == 0.3
        assert set(trial.distributions) == {"lr", "epochs", "optimizer"}
        study.tell(trial, 0.0)
