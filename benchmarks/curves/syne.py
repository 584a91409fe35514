"""Syne Tune's schedulers as replay anchors, driven through their own interface (``suggest``,
``on_trial_add``, ``on_trial_result``, ``on_trial_complete``), as its simulator backend drives them.

Settings (Syne Tune 0.16's baselines, its documented defaults except where the protocol fixes them): metric
val_acc maximised, ``time_attr`` the epoch, ``max_t`` 12, ``grace_period`` 2 (the first decision after the
frozen-head epoch), ``reduction_factor`` 3 (its default). Hyperband is its ASHA with brackets (as many as the
rungs allow: 2 for grace 2, max 12, reduction 3). Syne Tune 0.16's ASHA only stops: its promotion type was
removed in the 0.14 rewrite, so "ASHA promotion" is run by hpo's own code only (``hpo-asha*``).

Importing this module fails without ``syne-tune`` installed (``pip install 'syne-tune[basic]'``); the replay
then lists these anchors as not run.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from syne_tune.backend.trial_status import Trial
from syne_tune.config_space import choice, loguniform, uniform
from syne_tune.optimizer import baselines
from syne_tune.optimizer.scheduler import SchedulerDecision

from benchmarks.curves.sim import Answer, Job

MAX_T, GRACE, ETA = 12, 2, 3
logging.getLogger("syne_tune").setLevel(logging.ERROR)


def config_space() -> dict[str, Any]:
    """hpo's default search space (``hpo.space.DEFAULT_SPACE``) in Syne Tune's terms."""
    from hpo.space import DEFAULT_SPACE

    out: dict[str, Any] = {}
    for name, spec in DEFAULT_SPACE.items():
        if "choices" in spec:
            out[name] = choice(list(spec["choices"]))
        elif spec.get("log"):
            out[name] = loguniform(spec["low"], spec["high"])
        else:
            out[name] = uniform(spec["low"], spec["high"])
    return out


@dataclass
class SyneArm:
    name: str
    make: Callable[[int], Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def searcher(self, seed: int, n_trials: int | None, epochs: int, parallel: int) -> SyneSearcher:
        np.random.seed(seed)  # ASHA picks a trial's bracket with numpy's global generator
        return SyneSearcher(self.make(seed), n_trials)


class SyneSearcher:
    def __init__(self, scheduler: Any, n_trials: int | None) -> None:
        self.scheduler, self.n_trials, self.created = scheduler, n_trials, 0
        self.last: dict[int, float] = {}

    def next_job(self) -> Job | None:
        if self.n_trials is not None and self.created >= self.n_trials:
            return None
        suggestion = self.scheduler.suggest()
        if suggestion is None or suggestion.config is None:
            return None
        trial = Trial(trial_id=self.created, config=suggestion.config, creation_time=datetime.datetime.now())
        self.created += 1
        self.scheduler.on_trial_add(trial)
        params = {k: suggestion.config[k] for k in config_space()}
        return Job(trial, params)

    def report(self, job: Job, epoch: int, val: float) -> Answer:
        self.last[job.key.trial_id] = val
        decision = self.scheduler.on_trial_result(job.key, {"epoch": epoch, "val_acc": val})
        if epoch >= MAX_T:
            return "continue"  # Syne Tune says STOP at max_t: the trial is complete, not stopped
        return "prune" if decision in (SchedulerDecision.STOP, SchedulerDecision.PAUSE) else "continue"

    def finished(self, job: Job, state: Literal["COMPLETE", "PRUNED"], value: float | None) -> None:
        if state == "COMPLETE":
            result = {"epoch": job.done, "val_acc": self.last[job.key.trial_id]}
            self.scheduler.on_trial_complete(job.key, result)


def anchors() -> dict[str, SyneArm]:
    common = {"metric": "val_acc", "do_minimize": False, "time_attr": "epoch", "max_t": MAX_T}
    multi = {**common, "grace_period": GRACE, "reduction_factor": ETA}
    space = config_space

    def asha(brackets: int) -> Callable[[int], Any]:
        return lambda seed: baselines.ASHA(space(), random_seed=seed, brackets=brackets, **multi)

    return {
        "syne-asha": SyneArm("syne-asha", asha(1), {"scheduler": "ASHA (stopping)", **multi, "brackets": 1}),
        "syne-hyperband": SyneArm(
            "syne-hyperband", asha(2), {"scheduler": "ASHA with brackets", **multi, "brackets": 2}
        ),
        "syne-bohb": SyneArm(
            "syne-bohb", lambda seed: baselines.BOHB(space(), random_seed=seed, **multi), {"scheduler": "BOHB", **multi}
        ),
        "syne-random": SyneArm(
            "syne-random",
            lambda seed: baselines.RandomSearch(space(), metrics=["val_acc"], do_minimize=False, random_seed=seed),
            {"scheduler": "RandomSearch", "metric": "val_acc", "do_minimize": False},
        ),
    }
