"""The searches the replay compares: hpo's (its own sampler, pruner and promotion code) and the anchors'.

hpo's searcher does what the coordinator does for a sweep: ``hpo.study.make_sampler`` wrapped as the
coordinator wraps it (``LearnsFromGpuMemory``, which also shows paused trials to the sampler as PRUNED), params
through ``hpo.space.sample``, the pruner state of ``hpo.coordinator.pruning`` (or the promotion state of
``hpo.coordinator.promotion``) told every report and every finished trial, never pruning at the last epoch,
on an Optuna in-memory study. Anchors use their own libraries with the settings listed in ``ANCHORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from benchmarks.curves.sim import Answer, Job

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space() -> dict[str, Any]:
    from hpo.space import parse_space
    from trials.config import searchable_fields

    return dict(parse_space(None, searchable_fields()).distributions)


@dataclass
class HpoArm:
    """One of hpo's configurations: sampler, its start-up trials, and a pruner (or promotion) rule."""

    name: str
    sampler: str = "tpe"
    startup: int | None = None  # None: hpo's default for the budget (``default_startup_trials``)
    rule: Any = None  # a ``hpo.coordinator.pruning`` rule, a ``PromotionRule``, or None

    def searcher(self, seed: int, n_trials: int | None, epochs: int, parallel: int) -> HpoSearcher:
        return HpoSearcher(self, seed, n_trials, epochs, parallel)


class HpoSearcher:
    def __init__(self, arm: HpoArm, seed: int, n_trials: int | None, epochs: int, parallel: int) -> None:
        from hpo.coordinator.promotion import PromotionRule
        from hpo.coordinator.sampling import LearnsFromGpuMemory
        from hpo.study import default_startup_trials, make_sampler

        startup = default_startup_trials(n_trials) if arm.startup is None else arm.startup
        sampler = make_sampler(arm.sampler, seed, parallel=parallel, startup_trials=startup)
        self.study = optuna.create_study(direction="maximize", sampler=LearnsFromGpuMemory(sampler))
        self.storage = self.study._storage
        self.dists = _space()
        self.n_trials, self.epochs, self.created = n_trials, epochs, 0
        self.values: dict[int, dict[int, float]] = {}
        self.promo = arm.rule.new_state("maximize", epochs) if isinstance(arm.rule, PromotionRule) else None
        self.state = arm.rule.new_state("maximize", "replay") if arm.rule is not None and not self.promo else None
        self.paused: dict[int, Job] = {}

    def next_job(self) -> Job | None:
        if self.promo is not None:
            number = self.promo.next_promotion()
            if number is not None:
                job = self.paused.pop(number)
                self.storage.set_trial_state_values(job.key._trial_id, TrialState.RUNNING)
                self.promo.resumed(number)
                return job
        if self.n_trials is not None and self.created >= self.n_trials:
            return None
        from hpo.space import sample

        # a new trial, as the coordinator creates one: never a WAITING (paused) trial, which Study.ask would take
        trial = optuna.Trial(self.study, self.storage.create_new_trial(self.study._study_id))
        self.created += 1
        params = sample(self.dists, {}, {}, lambda name, dist: trial._suggest(name, dist))
        self.values[trial.number] = {}
        return Job(trial, params)

    def report(self, job: Job, epoch: int, val: float) -> Answer:
        trial = job.key
        self.storage.set_trial_intermediate_value(trial._trial_id, epoch, val)
        values = self.values[trial.number]
        values[epoch] = val
        if self.promo is not None:
            answer = self.promo.report(trial.number, values)
            if answer == "pause" and epoch < self.epochs:
                self._pause(job, epoch)
                return "pause"
            return "continue"
        if self.state is None:
            return "continue"
        decision = self.state.report(trial.number, values)
        for key, value in decision.system_attrs.items():
            self.storage.set_trial_system_attr(trial._trial_id, key, value)
        if epoch >= self.epochs:
            return "continue"  # the coordinator never prunes at the last epoch
        return "prune" if decision.prune else "continue"

    def _pause(self, job: Job, epoch: int) -> None:
        from hpo import study as studies

        trial = job.key
        self.storage.set_trial_system_attr(trial._trial_id, studies.SYS_PAUSED, epoch)
        self.storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        self.paused[trial.number] = job

    def finished(self, job: Job, state: Literal["COMPLETE", "PRUNED"], value: float | None) -> None:
        trial = job.key
        if self.paused.pop(trial.number, None) is not None:
            # answered "pause" at the epoch its run ended anyway (early stopping): fit completes it
            self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
        if state == "COMPLETE":
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=TrialState.PRUNED)
        values = self.values[trial.number]
        if self.state is not None:
            self.state.finished(trial.number, state, values)
        if self.promo is not None:
            self.promo.finished(trial.number)


@dataclass
class OptunaArm:
    """Stock Optuna: a sampler and a pruner as its docs show them, driven by ask / report / should_prune /
    tell like an objective function does."""

    name: str
    make_sampler: Callable[[int], optuna.samplers.BaseSampler]
    make_pruner: Callable[[], optuna.pruners.BasePruner]
    settings: dict[str, Any] = field(default_factory=dict)

    def searcher(self, seed: int, n_trials: int | None, epochs: int, parallel: int) -> OptunaSearcher:
        return OptunaSearcher(self, seed, n_trials)


class OptunaSearcher:
    def __init__(self, arm: OptunaArm, seed: int, n_trials: int | None) -> None:
        # a fixed name: Optuna's HyperbandPruner picks each trial's bracket by a hash of the study's name
        self.study = optuna.create_study(
            study_name=f"replay-{seed}", direction="maximize", sampler=arm.make_sampler(seed), pruner=arm.make_pruner()
        )
        self.dists = _space()
        self.n_trials, self.created = n_trials, 0

    def next_job(self) -> Job | None:
        if self.n_trials is not None and self.created >= self.n_trials:
            return None
        trial = self.study.ask()
        self.created += 1
        return Job(trial, {name: trial._suggest(name, dist) for name, dist in self.dists.items()})

    def report(self, job: Job, epoch: int, val: float) -> Answer:
        job.key.report(val, epoch)
        return "prune" if job.key.should_prune() else "continue"

    def finished(self, job: Job, state: Literal["COMPLETE", "PRUNED"], value: float | None) -> None:
        if state == "COMPLETE":
            self.study.tell(job.key, value)
        else:
            self.study.tell(job.key, state=TrialState.PRUNED)


def hpo_arms() -> dict[str, HpoArm]:
    """hpo's candidates (PROTOCOL.md section 4), by name."""
    from hpo.coordinator.promotion import PromotionRule
    from hpo.coordinator.pruning import HyperbandRule, MedianRule, SuccessiveHalvingRule

    median = MedianRule(n_startup_trials=2, n_warmup_steps=2)
    return {
        "hpo-nopruning": HpoArm("hpo-nopruning"),
        "hpo-tpe10-nopruning": HpoArm("hpo-tpe10-nopruning", startup=10),
        "hpo-gp-nopruning": HpoArm("hpo-gp-nopruning", sampler="gp"),
        "hpo-random-nopruning": HpoArm("hpo-random-nopruning", sampler="random"),
        "hpo-median": HpoArm("hpo-median", rule=median),
        "hpo-median-w3": HpoArm("hpo-median-w3", rule=MedianRule(n_startup_trials=2, n_warmup_steps=3)),
        "hpo-sh": HpoArm("hpo-sh", rule=SuccessiveHalvingRule(min_resource=2, reduction_factor=3)),
        "hpo-hyperband": HpoArm(
            "hpo-hyperband", rule=HyperbandRule(min_resource=2, max_resource=12, reduction_factor=3)
        ),
        "hpo-asha3": HpoArm("hpo-asha3", rule=PromotionRule(min_resource=2, reduction_factor=3)),
        "hpo-asha2": HpoArm("hpo-asha2", rule=PromotionRule(min_resource=2, reduction_factor=2)),
    }


def optuna_anchors() -> dict[str, OptunaArm]:
    s, p = optuna.samplers, optuna.pruners
    return {
        "optuna-tpe-median": OptunaArm(
            "optuna-tpe-median",
            lambda seed: s.TPESampler(seed=seed),
            lambda: p.MedianPruner(n_warmup_steps=2),
            {"sampler": "TPESampler(seed) (defaults)", "pruner": "MedianPruner(n_warmup_steps=2)"},
        ),
        "optuna-tpe-hyperband": OptunaArm(
            "optuna-tpe-hyperband",
            lambda seed: s.TPESampler(seed=seed),
            lambda: p.HyperbandPruner(min_resource=2, max_resource=12, reduction_factor=3),
            {
                "sampler": "TPESampler(seed)",
                "pruner": "HyperbandPruner(min_resource=2, max_resource=12, reduction_factor=3)",
            },
        ),
        "random": OptunaArm(
            "random",
            lambda seed: s.RandomSampler(seed=seed),
            lambda: p.NopPruner(),
            {"sampler": "RandomSampler(seed)", "pruner": "none"},
        ),
    }
