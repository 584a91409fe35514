"""Optuna's pruners, each decision made from statistics kept up to date as trials report and finish. Pure.

Optuna's pruners walk the study on every call: ``MedianPruner``/``PercentilePruner`` every COMPLETE trial,
``SuccessiveHalvingPruner``/``HyperbandPruner`` every trial (and a fresh worker first reads the whole
study), so a decision's cost grows with the study. Here each rule (its settings, ``to_optuna()`` for the
study) makes a state (``new_state``) that the coordinator loads once from the study and then keeps up to
date; a decision reads sorted lists (per step, or per rung), so it costs about the same at 100 or 100,000
trials. The arithmetic is Optuna's 5.0 (``optuna/pruners/_percentile.py``, ``_successive_halving.py``,
``_hyperband.py``); ``tests/test_pruning.py`` checks every decision against Optuna's own pruner driven
through a real study, for each type.

The interface the coordinator uses, the same for every type::

    state = rule.new_state(direction, study_name)
    state.load(trials)                    # at connect: the study's trials in ``rule.loads`` states, with
                                          # what ``rule.reads`` names (``hpo.coordinator.reads``)
    decision = state.report(number, values)   # each reported value: prune? and system attrs to write
    state.finished(number, state_name, values)  # the trial was told its final state
"""

from __future__ import annotations

import binascii
import bisect
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol

Direction = str  # "maximize" | "minimize"
Resource = int | Literal["auto"]
#: What a state loads of the trials: all their intermediate values, or (rung-based rules) only their rung
#: attrs and the largest last step of a COMPLETE trial.
Reads = Literal["values", "last_step"]

#: Optuna's trial system attr for a trial's value where it completed rung ``i`` (successive halving, Hyperband).
RUNG_KEY = "completed_rung_{}"
RUNG_PREFIX = "completed_rung_"
_RUNG_KEY = re.compile(r"^completed_rung_(\d+)$")
_FINISHED = ("COMPLETE", "PRUNED", "FAIL")


# ----------------------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class Decision:
    """A pruner's answer to one report: ``prune``, and the trial system attrs Optuna's pruner would have
    written on the way (``completed_rung_<i>``: one per rung the trial reached), for the study to match."""

    prune: bool
    system_attrs: dict[str, float] = field(default_factory=dict)


_KEEP = Decision(False)
_PRUNE = Decision(True)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class TrialRecord(Protocol):
    """What a state loads from a trial (an Optuna ``FrozenTrial`` is one)."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> _Named: ...
    @property
    def intermediate_values(self) -> Mapping[int, float]: ...
    @property
    def system_attrs(self) -> Mapping[str, Any]: ...


class PrunerState(Protocol):
    """One study's pruning state: loaded once, then told every report and every finished trial."""

    def load(self, trials: Iterable[TrialRecord]) -> None:
        """Take in the study's existing trials (those in the rule's ``loads`` states)."""

    def report(self, number: int, values: Mapping[int, float]) -> Decision:
        """Trial ``number`` reported; ``values`` are all its intermediate values so far (by step)."""
        ...

    def finished(self, number: int, state: str, values: Mapping[int, float]) -> None:
        """Trial ``number`` was told ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``) with these values."""


# ----------------------------------------------------------------------------------------------------------
# Parameters: one check per parameter, shared by the rules and the sweep config (which names the field)


def param_problem(kind: str, name: str, value: Any, params: Mapping[str, Any]) -> str | None:
    """What is wrong with parameter ``name`` = ``value`` of pruner ``kind`` (``params``: the others, for the
    checks that involve two), or None. Optuna's own constraints, plus the ones its pruners leave to fail
    later (Hyperband's resources)."""
    at_least_0 = ("n_startup_trials", "n_warmup_steps", "min_early_stopping_rate", "bootstrap_count")
    if name in at_least_0 and value < 0:
        return "must be at least 0"
    if name in ("interval_steps", "n_min_trials") and value < 1:
        return "must be at least 1"
    if name == "percentile" and not 0.0 <= value <= 100.0:
        return "must be between 0 and 100"
    if name == "reduction_factor" and value < 2:
        return "must be at least 2"
    if name == "min_resource" and kind == "hyperband" and value == "auto":
        return "must be a number of steps (Hyperband has no 'auto' minimum)"
    if name == "min_resource" and value != "auto" and not (_is_int(value) and value >= 1):
        return "must be 'auto' or at least 1" if kind == "successive_halving" else "must be at least 1"
    if name == "max_resource" and value != "auto":
        low = params.get("min_resource", 1)
        low = low if _is_int(low) else 1
        if not (_is_int(value) and value >= low):
            return f"must be 'auto' or at least min_resource ({low})"
    if name == "bootstrap_count" and value > 0:
        auto = "min_resource" if kind == "successive_halving" else "max_resource"
        if params.get(auto, "auto") == "auto":
            return f"must be 0 while {auto} is 'auto' (Optuna refuses the pair)"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(kind: str, params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        problem = param_problem(kind, name, value, params)
        if problem:
            raise ValueError(f"{name}: {problem}, got {value!r}")


class _Rule:
    """What every rule shares: its parameters checked as Optuna checks them (and named in the error), and the
    Optuna pruner with the same parameters (``OPTUNA``: its class name in ``optuna.pruners``), which the
    study is loaded with so that the dashboard and stock tools see the sweep's pruner."""

    kind: ClassVar[str]
    OPTUNA: ClassVar[str]

    def __post_init__(self) -> None:
        _check(self.kind, asdict(self))  # type: ignore[call-overload]

    def to_optuna(self) -> object:
        import optuna

        return getattr(optuna.pruners, self.OPTUNA)(**asdict(self))  # type: ignore[call-overload]


# ----------------------------------------------------------------------------------------------------------
# Median and percentile


@dataclass(frozen=True)
class _StepRule(_Rule):
    """The parameters the median and percentile rules share (Optuna's names and defaults): both compare a
    trial's best value so far with the COMPLETE trials' values at the same step."""

    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1

    loads: ClassVar[tuple[str, ...] | None] = ("COMPLETE",)
    #: what ``load`` reads of those trials: every intermediate value
    reads: ClassVar[Reads] = "values"

    def new_state(self, direction: Direction, study_name: str = "") -> PercentileState:
        return PercentileState(self, direction)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MedianRule(_StepRule):
    """The settings of ``optuna.pruners.MedianPruner`` (the percentile rule at 50)."""

    kind: ClassVar[str] = "median"
    OPTUNA: ClassVar[str] = "MedianPruner"

    @property
    def percentile(self) -> float:
        return 50.0


@dataclass(frozen=True)
class PercentileRule(_StepRule):
    """The settings of ``optuna.pruners.PercentilePruner``: prune a trial whose best value so far is worse
    than the ``percentile`` of the COMPLETE trials' values at the same step (required, by keyword)."""

    percentile: float = field(kw_only=True)

    kind: ClassVar[str] = "percentile"
    OPTUNA: ClassVar[str] = "PercentilePruner"


@dataclass
class StepStatistics:
    """The intermediate values of COMPLETE trials, by step, each step's values kept sorted.

    A percentile is read off the sorted values in constant time with numpy's own interpolation
    arithmetic (``sorted_percentile``), so a decision costs the same at 100 or 100,000 trials and right
    after a trial completes; adding a trial is a binary-search insert per step.
    """

    n_trials: int = 0
    _sorted: dict[int, list[float]] = field(default_factory=dict)  # non-NaN values, ascending
    _counts: dict[int, int] = field(default_factory=dict)  # values at the step, NaN included

    def add_trial(self, intermediate_values: Mapping[int, float]) -> None:
        """Count one more COMPLETE trial with these intermediate values."""
        for step, value in self._count(intermediate_values):
            bisect.insort(self._sorted.setdefault(step, []), value)

    def add_trials(self, trials: Iterable[Mapping[int, float]]) -> None:
        """Count many COMPLETE trials at once (a study being loaded): appended, then each step sorted once."""
        for intermediate_values in trials:
            for step, value in self._count(intermediate_values):
                self._sorted.setdefault(step, []).append(value)
        for values in self._sorted.values():
            values.sort()

    @classmethod
    def from_sorted(cls, n_trials: int, counts: Mapping[int, int], values: Mapping[int, list[float]]) -> StepStatistics:
        """The statistics of ``n_trials`` COMPLETE trials given per step: how many values each step has (NaN
        included) and its non-NaN values, ascending (as a database sorts them: no per-trial pass)."""
        return cls(n_trials, {step: values.get(step, []) for step in counts}, dict(counts))

    def _count(self, intermediate_values: Mapping[int, float]) -> Iterator[tuple[int, float]]:
        """Count the trial and its value at each step; yields the (step, value) pairs to keep (not NaN)."""
        self.n_trials += 1
        for step, value in intermediate_values.items():
            self._counts[step] = self._counts.get(step, 0) + 1
            self._sorted.setdefault(step, [])
            if not math.isnan(float(value)):
                yield step, float(value)

    def percentile(self, step: int, q: float, n_min_trials: int) -> float:
        """``np.nanpercentile`` of the values at ``step`` (NaN when fewer than ``n_min_trials`` trials have one)."""
        if self._counts.get(step, 0) < n_min_trials:
            return math.nan
        values = self._sorted.get(step, [])
        if not values:
            return math.nan  # only NaN at this step: numpy's answer too
        return sorted_percentile(values, q)


def sorted_percentile(values: list[float], q: float) -> float:
    """``np.percentile(values, q)`` (method "linear") of ascending, NaN-free ``values``, with numpy's own
    arithmetic (numpy 2.x ``_quantile``): virtual index ``(n - 1) * (q / 100)``; past the last element both
    neighbours are the last one and the weight is ``index + 1``; then ``a + (b - a) * g``, or
    ``b - (b - a) * (1 - g)`` when ``g >= 0.5``. IEEE arithmetic is the same in Python, so infinities give
    numpy's NaN where numpy gives one."""
    n = len(values)
    index = (n - 1) * (q / 100)
    if index >= n - 1:
        below, above, lower = n - 1, n - 1, -1.0
    elif index < 0:
        below, above, lower = 0, 0, 0.0
    else:
        lower = float(math.floor(index))
        below = int(lower)
        above = below + 1
    gamma = index - lower
    a, b = values[below], values[above]
    diff = b - a
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def is_first_in_interval_step(step: int, steps: Iterable[int], n_warmup_steps: int, interval_steps: int) -> bool:
    """Whether ``step`` is the first reported step in its pruning interval (Optuna's rule)."""
    nearest_lower_pruning_step = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    second_last_step = max((s for s in steps if s != step), default=-1)
    return second_last_step < nearest_lower_pruning_step


def best_value(values: Mapping[int, float], direction: Direction) -> float:
    """The trial's best intermediate value so far, ignoring NaN (NaN if all are NaN)."""
    finite = [v for v in values.values() if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if direction == "maximize" else min(finite)


def percentile_prunes(
    rule: MedianRule | PercentileRule, stats: StepStatistics, values: Mapping[int, float], direction: Direction
) -> bool:
    """Optuna's ``PercentilePruner.prune`` (``MedianPruner``'s too) for a trial whose values are ``values``."""
    if stats.n_trials == 0 or stats.n_trials < rule.n_startup_trials:
        return False
    if not values:
        return False
    step = max(values)
    if step < rule.n_warmup_steps:
        return False
    if not is_first_in_interval_step(step, values, rule.n_warmup_steps, rule.interval_steps):
        return False
    best = best_value(values, direction)
    if math.isnan(best):
        return True
    q = rule.percentile if direction == "minimize" else 100 - rule.percentile
    p = stats.percentile(step, q, rule.n_min_trials)
    if math.isnan(p):
        return False
    return best < p if direction == "maximize" else best > p


class PercentileState:
    """The median or percentile rule's state: the COMPLETE trials' values by step."""

    def __init__(self, rule: MedianRule | PercentileRule, direction: Direction) -> None:
        self.rule = rule
        self.direction = direction
        self.stats = StepStatistics()

    def load(self, trials: Iterable[TrialRecord]) -> None:
        self.stats.add_trials(t.intermediate_values for t in trials if t.state.name == "COMPLETE")

    def report(self, number: int, values: Mapping[int, float]) -> Decision:
        return _PRUNE if percentile_prunes(self.rule, self.stats, values, self.direction) else _KEEP

    def finished(self, number: int, state: str, values: Mapping[int, float]) -> None:
        if state == "COMPLETE":
            self.stats.add_trial(values)


# ----------------------------------------------------------------------------------------------------------
# Successive halving and Hyperband


@dataclass(frozen=True)
class SuccessiveHalvingRule(_Rule):
    """The settings of ``optuna.pruners.SuccessiveHalvingPruner`` (asynchronous successive halving).

    A trial that reaches rung ``r`` (step ``min_resource * reduction_factor ** (min_early_stopping_rate +
    r)``) goes on only if its value there is in the top ``1 / reduction_factor`` of every trial's value at
    that rung, whatever those trials' states now."""

    min_resource: Resource = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0

    kind: ClassVar[str] = "successive_halving"
    OPTUNA: ClassVar[str] = "SuccessiveHalvingPruner"
    loads: ClassVar[tuple[str, ...] | None] = None  # every trial: each one's rungs count
    #: what ``load`` reads: each trial's rung attrs, and (for "auto") the last step of the COMPLETE trial that
    #: went furthest: the state keeps only the largest
    reads: ClassVar[Reads] = "last_step"

    def new_state(self, direction: Direction, study_name: str = "") -> SuccessiveHalvingState:
        return SuccessiveHalvingState(self, direction)


@dataclass(frozen=True)
class HyperbandRule(_Rule):
    """The settings of ``optuna.pruners.HyperbandPruner``: several successive-halving brackets (minimum
    early-stopping rates 0, 1, ...), each trial in one, picked by a hash of the study name and its number."""

    min_resource: int = 1
    max_resource: Resource = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0

    kind: ClassVar[str] = "hyperband"
    OPTUNA: ClassVar[str] = "HyperbandPruner"
    loads: ClassVar[tuple[str, ...] | None] = None
    reads: ClassVar[Reads] = "last_step"

    def new_state(self, direction: Direction, study_name: str = "") -> HyperbandState:
        return HyperbandState(self, direction, study_name)


PrunerRule = MedianRule | PercentileRule | SuccessiveHalvingRule | HyperbandRule


def promotable(others: list[float], value: float, reduction_factor: int, direction: Direction) -> bool:
    """Optuna's ``_is_trial_promotable_to_next_rung`` for ``value`` among ``others`` (ascending: the values of
    the other trials at the rung), in O(log n): the trial counts itself among the competitors, and the
    first ``reduction_factor - 1`` competitors need only be the best so far.

    Optuna sorts the competitors and compares ``value`` with the one at the promotable index ``k``; that
    holds exactly when at most ``k`` competitors are strictly better than ``value`` (ties promote)."""
    k = max((len(others) + 1) // reduction_factor - 1, 0)
    if direction == "maximize":
        better = len(others) - bisect.bisect_right(others, value)
    else:
        better = bisect.bisect_left(others, value)
    return better <= k


@dataclass
class Rungs:
    """One successive-halving pruner's rungs: the values trials had where they completed each rung, sorted."""

    values: list[list[float]] = field(default_factory=list)

    def at(self, rung: int) -> list[float]:
        while len(self.values) <= rung:
            self.values.append([])
        return self.values[rung]

    def add(self, rung: int, value: float) -> None:
        bisect.insort(self.at(rung), value)

    def load(self, entries: Iterable[tuple[int, float]]) -> None:
        """Add many (rung, value) at once: appended, then each rung sorted once."""
        for rung, value in entries:
            self.at(rung).append(value)
        for values in self.values:
            values.sort()


def halving_decision(
    rungs: Rungs,
    rung: int,
    step: int,
    value: float,
    *,
    min_resource: int,
    reduction_factor: int,
    min_early_stopping_rate: int,
    bootstrap_count: int,
    direction: Direction,
) -> Decision:
    """Optuna's ``SuccessiveHalvingPruner.prune`` for a trial at ``step`` with ``value`` there, having completed
    ``rung`` rungs: it completes each rung its step has reached (its value recorded there, as Optuna writes
    ``completed_rung_<i>``), and is pruned at the first one it does not win. ``rungs`` is updated."""
    attrs: dict[str, float] = {}
    while True:
        if step < min_resource * reduction_factor ** (min_early_stopping_rate + rung):
            return Decision(False, attrs)
        if math.isnan(value):
            return Decision(True, attrs)
        attrs[RUNG_KEY.format(rung)] = value
        others = rungs.at(rung)
        wins = len(others) + 1 > bootstrap_count and promotable(others, value, reduction_factor, direction)
        rungs.add(rung, value)
        if not wins:
            return Decision(True, attrs)
        rung += 1


def completed_rungs(system_attrs: Mapping[str, Any]) -> tuple[int, dict[int, float]]:
    """A trial's rungs from its system attrs: how many it completed in a row from rung 0 (Optuna's
    ``_get_current_rung``), and its value at every rung it has a key for."""
    values = {int(m.group(1)): float(v) for k, v in system_attrs.items() if (m := _RUNG_KEY.match(k))}
    current = 0
    while current in values:
        current += 1
    return current, values


def _last_complete_step(t: TrialRecord) -> int | None:
    return max(t.intermediate_values) if t.state.name == "COMPLETE" and t.intermediate_values else None


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class _HalvingState:
    """What successive halving and Hyperband both track: the rung each unfinished trial has completed, and
    the last step of the longest COMPLETE trial (for the ``auto`` resources); and one halving decision."""

    def __init__(self, reduction_factor: int, bootstrap_count: int, direction: Direction) -> None:
        self.direction = direction
        self._reduction_factor, self._bootstrap_count = reduction_factor, bootstrap_count
        self._rung: dict[int, int] = {}  # unfinished trials: rungs completed
        self._max_complete_step: int | None = None

    def _note(self, t: TrialRecord) -> dict[int, float]:
        """At load: remember ``t``'s rung and last step; returns its completed rungs' values."""
        current, values = completed_rungs(t.system_attrs)
        if t.state.name not in _FINISHED:
            self._rung[t.number] = current
        self._max_complete_step = _max(self._max_complete_step, _last_complete_step(t))
        return values

    def _decide(
        self, rungs: Rungs, number: int, values: Mapping[int, float], min_resource: int, min_rate: int
    ) -> Decision:
        step = max(values)
        decision = halving_decision(
            rungs,
            self._rung.get(number, 0),
            step,
            values[step],
            min_resource=min_resource,
            reduction_factor=self._reduction_factor,
            min_early_stopping_rate=min_rate,
            bootstrap_count=self._bootstrap_count,
            direction=self.direction,
        )
        self._rung[number] = self._rung.get(number, 0) + len(decision.system_attrs)
        return decision

    def finished(self, number: int, state: str, values: Mapping[int, float]) -> None:
        self._rung.pop(number, None)
        if state == "COMPLETE" and values:
            self._max_complete_step = _max(self._max_complete_step, max(values))


class SuccessiveHalvingState(_HalvingState):
    """Successive halving's state: every trial's value at each rung it completed (per rung, sorted), the rung
    each running trial is at, and the last step of the longest COMPLETE trial (for ``min_resource: auto``)."""

    def __init__(self, rule: SuccessiveHalvingRule, direction: Direction) -> None:
        super().__init__(rule.reduction_factor, rule.bootstrap_count, direction)
        self.rule = rule
        self.rungs = Rungs()
        self._min_resource = rule.min_resource if isinstance(rule.min_resource, int) else None

    def load(self, trials: Iterable[TrialRecord]) -> None:
        entries: list[tuple[int, float]] = []
        for t in trials:
            entries += self._note(t).items()
        self.rungs.load(entries)

    def report(self, number: int, values: Mapping[int, float]) -> Decision:
        if not values:
            return _KEEP
        if self._min_resource is None:
            # Optuna estimates it once, at the first decision after a trial completed, and keeps it
            if self._max_complete_step is None:
                return _KEEP
            self._min_resource = max(self._max_complete_step // 100, 1)
        return self._decide(self.rungs, number, values, self._min_resource, self.rule.min_early_stopping_rate)


class HyperbandState(_HalvingState):
    """Hyperband's state: successive halving per bracket, over the trials of that bracket only. Until the
    brackets are known (``max_resource: auto`` waits for a COMPLETE trial) trials' rungs wait unsorted."""

    def __init__(self, rule: HyperbandRule, direction: Direction, study_name: str) -> None:
        super().__init__(rule.reduction_factor, rule.bootstrap_count, direction)
        self.rule = rule
        self.study_name = study_name
        self.brackets: list[Rungs] = []
        self._budgets: list[int] = []
        self._n_brackets: int | None = None
        self._waiting: list[tuple[int, int, float]] = []  # (number, rung, value) before the brackets exist

    def load(self, trials: Iterable[TrialRecord]) -> None:
        for t in trials:
            self._waiting += [(t.number, rung, value) for rung, value in self._note(t).items()]
        if self._n_brackets is not None:
            self._sort_waiting()

    def initialize(self) -> bool:
        """Optuna's ``_try_initialization``: the brackets and their trial budgets, once the maximum resource is
        known. False while it is not, or when there are no brackets (``max_resource`` below ``min_resource``)."""
        if self._n_brackets is None:
            max_resource = self.rule.max_resource
            if max_resource == "auto":
                if self._max_complete_step is None:
                    return False
                max_resource = self._max_complete_step + 1
            rf = self.rule.reduction_factor
            n = math.floor(math.log(max_resource / self.rule.min_resource, rf)) + 1
            self._n_brackets = n
            for bracket in range(n):
                s = n - 1 - bracket
                self._budgets.append(math.ceil(n * (rf**s) / (s + 1)))
            self.brackets = [Rungs() for _ in range(max(n, 0))]
            self._sort_waiting()
        return bool(self.brackets)

    def _sort_waiting(self) -> None:
        """Put the rungs that waited for the brackets into them."""
        if self.brackets:  # none: nothing is ever pruned, no rung matters
            by_bracket: list[list[tuple[int, float]]] = [[] for _ in self.brackets]
            for number, rung, value in self._waiting:
                by_bracket[self.bracket(number)].append((rung, value))
            for rungs, entries in zip(self.brackets, by_bracket, strict=True):
                rungs.load(entries)
        self._waiting = []

    def bracket(self, number: int) -> int:
        """Optuna's ``_get_bracket_id``: a CRC32 of ``<study name>_<number>`` spread over the brackets' budgets."""
        n = binascii.crc32(f"{self.study_name}_{number}".encode()) % sum(self._budgets)
        for bracket, budget in enumerate(self._budgets):
            n -= budget
            if n < 0:
                return bracket
        raise AssertionError("unreachable: n < sum of the budgets")

    def report(self, number: int, values: Mapping[int, float]) -> Decision:
        if not values or not self.initialize():
            return _KEEP
        bracket = self.bracket(number)
        return self._decide(self.brackets[bracket], number, values, self.rule.min_resource, bracket)


#: The pruner types, by the name the sweep config gives them.
RULES: dict[str, type[PrunerRule]] = {
    "median": MedianRule,
    "percentile": PercentileRule,
    "successive_halving": SuccessiveHalvingRule,
    "hyperband": HyperbandRule,
}


def parameters(kind: str) -> dict[str, Any]:
    """Pruner ``kind``'s parameters, in Optuna's order, with Optuna's defaults (None: Optuna has none)."""
    return {f.name: None if f.default is MISSING else f.default for f in fields(RULES[kind])}
