"""The search space: a YAML spec to Optuna distributions, and a trial to a plain dict. Pure.

Each entry of ``search_space`` is one of::

    lr: {low: 1.0e-5, high: 1.0e-1, log: true}   # float range (int range if the field is an int)
    epochs: {low: 2, high: 8, step: 2}            # int range with a step
    batch_size: {choices: [16, 32, 64]}           # categorical; a bare list means the same
    optimizer: [adamw, sgd]
    dropout: 0.1                                  # fixed: not searched, but applied to every trial
    dropout: {value: 0.1}                         # the same, spelled out
    momentum: {low: 0.8, high: 0.99, when: {optimizer: sgd}}     # conditional: suggested only when
    warmup_epochs: {low: 0, high: 2, when: {scheduler: [cosine]}}  # the condition holds

A condition names another searched categorical, or a fixed training field (the base config's value), and
the value or values for which the parameter is searched. A parameter whose condition is false is not
suggested (absent from the trial's params), and the trial trains with the field's default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from trials.config import merge_dotted

#: The five hyperparameters every sweep searches unless the config overrides or fixes them.
DEFAULT_SPACE: dict[str, Any] = {
    "lr": {"low": 1e-5, "high": 1e-1, "log": True},
    "batch_size": {"choices": [16, 32, 64, 128]},
    "dropout": {"low": 0.0, "high": 0.5},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "aug_strength": {"low": 0.0, "high": 1.0},
}

_RANGE_KEYS = frozenset({"low", "high", "log", "step"})

#: A parameter's condition: the name of another parameter or training field -> the values it must take.
Conditions = dict[str, tuple[Any, ...]]


class SpaceError(ValueError):
    """A search-space entry is invalid. ``path`` is relative to ``search_space``."""

    def __init__(self, path: str, value: Any, message: str) -> None:
        self.path = path
        self.value = value
        self.reason = message
        super().__init__(f"{path}: {message}, got {value!r}")


@dataclass(frozen=True)
class Param:
    """One entry: searched (``distribution`` set) or fixed (``distribution`` None, ``value`` set)."""

    name: str
    distribution: BaseDistribution | None
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # searched only if each named field takes one of its values

    @property
    def is_fixed(self) -> bool:
        return self.distribution is None

    def candidates(self) -> list[Any]:
        """Values worth validating against the training config: the fixed value, the bounds, every choice."""
        d = self.distribution
        if d is None:
            return [self.value]
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        assert isinstance(d, (FloatDistribution, IntDistribution))
        return [d.low, d.high]


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """The searched parameters, for ``study.ask(fixed_distributions=...)``."""
        return {p.name: p.distribution for p in self.params if p.distribution is not None}

    @property
    def conditions(self) -> dict[str, Conditions]:
        """The conditional parameters' conditions, by parameter name (plain data, for the coordinator)."""
        return {p.name: dict(p.when) for p in self.params if p.when}

    @property
    def fixed(self) -> dict[str, Any]:
        """The fixed parameters, applied to every trial as they are."""
        return {p.name: p.value for p in self.params if p.distribution is None}

    def to_spec(self) -> dict[str, Any]:
        """The space as a plain, YAML-safe spec that ``parse_space`` turns back into an equal space."""
        out: dict[str, Any] = {}
        for p in self.params:
            d = p.distribution
            if d is None:
                out[p.name] = {"value": p.value}
            elif isinstance(d, CategoricalDistribution):
                out[p.name] = {"choices": list(d.choices)}
            else:
                assert isinstance(d, (FloatDistribution, IntDistribution))
                spec: dict[str, Any] = {"low": d.low, "high": d.high}
                if d.log:
                    spec["log"] = True
                if d.step is not None and not (isinstance(d, IntDistribution) and d.step == 1):
                    spec["step"] = d.step
                out[p.name] = spec
            if p.when:
                out[p.name]["when"] = {field: list(values) for field, values in p.when}
        return out


def parse_space(
    spec: Mapping[str, Any] | None, field_types: Mapping[str, type], *, defaults: bool = True
) -> SearchSpace:
    """Parse a ``search_space`` mapping into a ``SearchSpace``.

    ``field_types`` maps each searchable training-config field to its Python type (int, float, str, bool);
    an entry for any other name is an error. With ``defaults``, the five default hyperparameters are
    searched unless ``spec`` overrides or fixes them.
    """
    if spec is not None and not isinstance(spec, Mapping):
        raise SpaceError("search_space", spec, "must be a mapping of field name to range, choices or value")
    merged: dict[str, Any] = dict(DEFAULT_SPACE) if defaults else {}
    merged.update(spec or {})
    params = []
    for name, entry in merged.items():
        if not isinstance(name, str) or name not in field_types:
            valid = ", ".join(sorted(field_types))
            raise SpaceError(str(name), entry, f"is not a searchable training-config field (valid: {valid})")
        params.append(parse_param(name, entry, field_types[name]))
    return SearchSpace(_ordered(_check_conditions(params, field_types)))


def _check_conditions(params: list[Param], field_types: Mapping[str, type]) -> list[Param]:
    """Each condition names another searched categorical (its values among the choices) or a training field
    that is not searched (its values of the field's type)."""
    by_name = {p.name: p for p in params}
    for p in params:
        for field, values in p.when:
            path = f"{p.name}.when.{field}"
            other = by_name.get(field)
            if field == p.name:
                raise SpaceError(path, list(values), "a parameter cannot depend on itself")
            if other is None:
                if field not in field_types:
                    raise SpaceError(path, list(values), "names no searched parameter or training field")
                for v in values:
                    _scalar(path, v, field_types[field])
            elif isinstance(other.distribution, CategoricalDistribution):
                missing = [v for v in values if v not in other.distribution.choices]
                if missing:
                    raise SpaceError(
                        path, missing[0], f"is not one of {field}'s choices {list(other.distribution.choices)}"
                    )
            else:
                kind = "a fixed value" if other.distribution is None else "a range"
                raise SpaceError(
                    path,
                    list(values),
                    f"{field} is {kind} in search_space: a condition needs a searched categorical"
                    " or a training field that is not in search_space",
                )
    return params


def _ordered(params: list[Param]) -> tuple[Param, ...]:
    """The params with every condition's parameter before the parameters that depend on it (a cycle is an
    error naming one of its parameters)."""
    by_name = {p.name: p for p in params}
    done: dict[str, Param] = {}
    visiting: list[str] = []

    def visit(p: Param) -> None:
        if p.name in done:
            return
        if p.name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(p.name) :], p.name])
            raise SpaceError(f"{p.name}.when", cycle, "conditions form a cycle")
        visiting.append(p.name)
        for field, _ in p.when:
            if field in by_name:
                visit(by_name[field])
        visiting.pop()
        done[p.name] = p

    for p in params:
        visit(p)
    return tuple(done.values())


def active(name: str, conditions: Mapping[str, Conditions], values: Mapping[str, Any]) -> bool:
    """Whether parameter ``name`` is searched, given the values sampled so far and the base config's values
    (``values``: dotted names)."""
    return all(values.get(field) in allowed for field, allowed in conditions.get(name, {}).items())


def sample(
    distributions: Mapping[str, BaseDistribution],
    conditions: Mapping[str, Conditions],
    base: Mapping[str, Any],
    suggest: Callable[[str, BaseDistribution], Any],
) -> dict[str, Any]:
    """Suggest the active parameters in order (``distributions`` lists a condition's parameter before those
    that depend on it), through ``suggest(name, distribution)``; returns the suggested values."""
    known = flatten(base)
    params: dict[str, Any] = {}
    for name, dist in distributions.items():
        if active(name, conditions, {**known, **params}):
            params[name] = suggest(name, dist)
    return params


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted names (``early_stopping.patience``)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_param(name: str, entry: Any, kind: type) -> Param:
    """Parse one search-space entry for a field of type ``kind``."""
    if isinstance(entry, Mapping) and "when" in entry:
        rest = {k: v for k, v in entry.items() if k != "when"}
        param = parse_param(name, rest, kind)
        if param.distribution is None:
            raise SpaceError(f"{name}.when", entry["when"], "only a searched parameter can have a condition")
        return Param(param.name, param.distribution, param.value, _when(f"{name}.when", entry["when"]))
    if isinstance(entry, Mapping):
        keys = set(entry)
        if keys == {"value"}:
            return Param(name, None, _scalar(name + ".value", entry["value"], kind))
        if "choices" in keys:
            extra = keys - {"choices"}
            if extra:
                raise SpaceError(
                    f"{name}.{sorted(extra)[0]}", entry[sorted(extra)[0]], "cannot be combined with choices"
                )
            return Param(name, _categorical(name + ".choices", entry["choices"], kind))
        unknown = keys - _RANGE_KEYS
        if unknown:
            key = sorted(unknown, key=str)[0]
            raise SpaceError(f"{name}.{key}", entry[key], "unknown key (use low/high/log/step, choices, or value)")
        return Param(name, _range(name, entry, kind))
    if isinstance(entry, list | tuple):
        return Param(name, _categorical(name, entry, kind))
    return Param(name, None, _scalar(name, entry, kind))


def _when(path: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(when, Mapping) or not when:
        raise SpaceError(path, when, "must map a parameter or training field to a value or a list of values")
    out = []
    for field, values in when.items():
        allowed = tuple(values) if isinstance(values, list | tuple) else (values,)
        if not allowed:
            raise SpaceError(f"{path}.{field}", values, "must give at least one value")
        out.append((str(field), allowed))
    return tuple(out)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _scalar(path: str, value: Any, kind: type, *, nullable: bool = True) -> Any:
    if value is None:
        if not nullable:
            raise SpaceError(path, value, "must be a number")
        return None  # nullable fields (weights, early_stopping.patience); the training config validates them
    if kind is bool:
        if not isinstance(value, bool):
            raise SpaceError(path, value, "must be true or false")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise SpaceError(path, value, "must be a string")
        return value
    if not _is_number(value) or not math.isfinite(value):
        raise SpaceError(path, value, "must be a finite number")
    if kind is int:
        if float(value) != int(value):
            raise SpaceError(path, value, "must be an integer")
        return int(value)
    return float(value)


def _categorical(path: str, choices: Any, kind: type) -> CategoricalDistribution:
    if not isinstance(choices, list | tuple) or len(choices) == 0:
        raise SpaceError(path, choices, "must be a non-empty list of choices")
    values = tuple(_scalar(f"{path}[{i}]", c, kind) for i, c in enumerate(choices))
    if len(set(values)) != len(values):
        raise SpaceError(path, list(choices), "must not repeat a choice")
    return CategoricalDistribution(values)


def _range(path: str, entry: Mapping[str, Any], kind: type) -> FloatDistribution | IntDistribution:
    if kind not in (int, float):
        raise SpaceError(path, dict(entry), f"is a {kind.__name__} field: give choices or a fixed value, not a range")
    for key in ("low", "high"):
        if key not in entry:
            raise SpaceError(f"{path}.{key}", None, "is required for a range")
    low = _scalar(path + ".low", entry["low"], kind, nullable=False)
    high = _scalar(path + ".high", entry["high"], kind, nullable=False)
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(path + ".log", log, "must be true or false")
    if low >= high:
        raise SpaceError(path, {"low": entry["low"], "high": entry["high"]}, "low must be less than high")
    step = entry.get("step")
    if step is not None:
        step = _scalar(path + ".step", step, kind, nullable=False)
        if step <= 0:
            raise SpaceError(path + ".step", entry["step"], "must be positive")
        if log:
            raise SpaceError(path + ".step", entry["step"], "cannot be combined with log: true")
        if step > high - low:
            raise SpaceError(path + ".step", entry["step"], f"is larger than the range {low}..{high}")
    if log and low <= 0:
        raise SpaceError(path + ".low", entry["low"], "must be > 0 for a log range")
    if kind is int:
        return IntDistribution(int(low), int(high), log=log, step=int(step) if step is not None else 1)
    return FloatDistribution(float(low), float(high), log=log, step=float(step) if step is not None else None)


def trial_config(base: Mapping[str, Any], fixed: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's full training config (a plain dict): ``base`` with the ``fixed`` params and the trial's
    sampled ``params`` (dotted names) applied. What the coordinator records on the trial and the worker trains."""
    return merge_dotted(dict(base), {**fixed, **params})
