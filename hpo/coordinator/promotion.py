"""Asynchronous successive halving in promotion mode (ASHA, Li et al. 2020): paused trials that resume. Pure.

Rungs sit at steps (epochs) ``min_resource * reduction_factor ** k`` below the trial's last epoch. A trial that
reports a rung's step is recorded there; if its value is then in the top ``1 / reduction_factor`` of every
value recorded at that rung it goes on, else it is **paused**: it stops, its checkpoint stays, its slot goes to
another trial. When a slot frees, ``next_promotion`` names the paused trial to resume first (the highest rung
first, the best value first) among those now in their rung's top ``1 / reduction_factor``: later results can
make a paused trial promotable, which a stopping rule (Optuna's pruners, Ray Tune's ASHA) never undoes.

Ranks count ties in the trial's favour. Unlike Optuna's ``SuccessiveHalvingPruner`` there is no "the first
trials go on if best so far": with fewer than ``reduction_factor`` values at a rung nobody is promotable, as in
the ASHA paper; the first trials pause, and are resumed as soon as enough trials have reached their rung.

The coordinator (a real sweep) and the learning-curve replay (``benchmarks/curves``) both use this class, so
the benchmark measures the decisions sweeps make.

    state = rule.new_state(direction)
    state.load(records)                         # a study's trials: (number, values, state, paused)
    answer = state.report(number, values)       # CONTINUE or PAUSE (the trial reached a rung and lost)
    state.resumed(number)                       # a paused trial resumes
    state.finished(number)                      # told COMPLETE, PRUNED or FAIL
    state.next_promotion()                      # the paused trial to resume now, or None
    state.hopeless(future)                      # paused trials that can no longer be promoted
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Answer = Literal["continue", "pause"]
CONTINUE: Answer = "continue"
PAUSE: Answer = "pause"


@dataclass(frozen=True)
class PromotionRule:
    """``pruner: {type: asha}``'s settings: the first rung's step and the reduction factor (η)."""

    min_resource: int = 2
    reduction_factor: int = 3

    kind: ClassVar[str] = "asha"

    def __post_init__(self) -> None:
        if not (isinstance(self.min_resource, int) and self.min_resource >= 1):
            raise ValueError(f"min_resource: must be at least 1, got {self.min_resource!r}")
        if not (isinstance(self.reduction_factor, int) and self.reduction_factor >= 2):
            raise ValueError(f"reduction_factor: must be at least 2, got {self.reduction_factor!r}")

    def rungs(self, max_steps: int) -> list[int]:
        """The rung steps below ``max_steps`` (a trial's last epoch: reaching it is finishing, not a rung)."""
        out, step = [], self.min_resource
        while step < max_steps:
            out.append(step)
            step *= self.reduction_factor
        return out

    def new_state(self, direction: str, max_steps: int) -> PromotionState:
        return PromotionState(self, direction, max_steps)


@dataclass(frozen=True)
class Record:
    """What ``load`` takes of a trial: its number, intermediate values, Optuna state name, and whether paused."""

    number: int
    values: Mapping[int, float]
    state: str  # RUNNING, WAITING, COMPLETE, PRUNED, FAIL
    paused: bool = False


@dataclass
class PromotionState:
    rule: PromotionRule
    direction: str
    max_steps: int
    #: per rung: the recorded values, sorted so that the best comes first (negated when maximizing)
    _keys: list[list[float]] = field(default_factory=list)
    #: per trial: its value at each rung it recorded
    _values: dict[int, dict[int, float]] = field(default_factory=dict)
    #: paused trials: number -> the rung they are paused at
    paused: dict[int, int] = field(default_factory=dict)
    #: trials running now: number -> the next rung they can record (to bound future arrivals)
    running: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = self.rule.rungs(self.max_steps)
        self._keys = [[] for _ in self.steps]

    # ---------------------------------------------------------------- recording
    def _key(self, value: float) -> float:
        if math.isnan(value):
            return math.inf  # NaN ranks last
        return -value if self.direction == "maximize" else value

    def _record(self, number: int, rung: int, value: float) -> None:
        mine = self._values.setdefault(number, {})
        if rung in mine:
            return  # a resumed trial replays its epochs: recorded once
        mine[rung] = value
        bisect.insort(self._keys[rung], self._key(value))

    def load(self, records: Iterable[Record]) -> None:
        """A study's trials: every rung value they reported; paused and running trials remembered."""
        for r in records:
            for rung, step in enumerate(self.steps):
                if step in r.values:
                    self._record(r.number, rung, float(r.values[step]))
            if r.paused:
                self.paused[r.number] = self._top_rung(r.number)
            elif r.state == "RUNNING":  # the next rung it can record: after its last step (rung 0 if none)
                self.running[r.number] = self._next_rung(max(r.values)) if r.values else 0

    def _top_rung(self, number: int) -> int:
        return max(self._values.get(number, {0: 0.0}), default=0)

    # ---------------------------------------------------------------- ranks
    def rank(self, number: int, rung: int) -> int:
        """How many values at ``rung`` are strictly better than the trial's (0: the best)."""
        return bisect.bisect_left(self._keys[rung], self._key(self._values[number][rung]))

    def population(self, rung: int) -> int:
        return len(self._keys[rung])

    def promotable(self, number: int, rung: int) -> bool:
        """In the top ``1 / reduction_factor`` of every value recorded at ``rung``."""
        return self.rank(number, rung) < self.population(rung) // self.rule.reduction_factor

    # ---------------------------------------------------------------- events
    def report(self, number: int, values: Mapping[int, float]) -> Answer:
        """Trial ``number`` reported; ``values``: all its intermediate values so far. PAUSE when its last step is
        a rung it has not won (it is then paused: ``next_promotion`` may resume it later)."""
        if not values:
            return CONTINUE
        step = max(values)
        self.running[number] = self._next_rung(step)
        if step not in self.steps:
            return CONTINUE
        rung = self.steps.index(step)
        self._record(number, rung, float(values[step]))
        if self.promotable(number, rung):
            return CONTINUE
        self.running.pop(number, None)
        self.paused[number] = rung
        return PAUSE

    def _next_rung(self, step: int) -> int:
        return bisect.bisect_right(self.steps, step)

    def resumed(self, number: int) -> None:
        rung = self.paused.pop(number)
        self.running[number] = rung + 1

    def finished(self, number: int) -> None:
        self.paused.pop(number, None)
        self.running.pop(number, None)

    def next_promotion(self) -> int | None:
        """The paused trial to resume now: from the highest rung down, the best paused trial there if it is
        promotable; None when no paused trial is."""
        by_rung: dict[int, list[int]] = {}
        for number, rung in self.paused.items():
            by_rung.setdefault(rung, []).append(number)
        for rung in sorted(by_rung, reverse=True):
            best = min(by_rung[rung], key=lambda n: (self.rank(n, rung), n))
            if self.promotable(best, rung):
                return best
        return None

    def hopeless(self, new_trials: float) -> list[int]:
        """Paused trials that no future can promote, given that at most ``new_trials`` more trials start
        (``math.inf``: no limit): even if every running trial, every paused trial below its rung and every new
        trial reached that rung with a worse value, its rank would stay outside the top 1/η."""
        if math.isinf(new_trials):
            return []
        out = []
        for number, rung in self.paused.items():
            can_arrive = new_trials + sum(1 for r in self.running.values() if r <= rung)
            can_arrive += sum(1 for r in self.paused.values() if r < rung)
            most = self.population(rung) + can_arrive
            if self.rank(number, rung) >= most // self.rule.reduction_factor:
                out.append(number)
        return sorted(out)

    def least_promising(self) -> list[int]:
        """Paused trials, the first the least likely to be promoted (lowest rung, then worst rank share): the
        order in which a disk budget gives up their checkpoints."""
        return sorted(
            self.paused,
            key=lambda n: (self.paused[n], -self.rank(n, self.paused[n]) / max(self.population(self.paused[n]), 1), n),
        )
