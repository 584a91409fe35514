"""Ray Tune's ASHA as a replay anchor: its ``ASHAScheduler`` object driven through the calls a Tune loop makes
(``on_trial_add``, ``on_trial_result``, ``on_trial_complete``), with Tune's default search (independent random
sampling of each parameter, as ``BasicVariantGenerator`` draws ``tune.loguniform`` / ``tune.choice``).

Settings: ``ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=12, grace_period=2)``, its
defaults otherwise (``reduction_factor`` 4, one bracket): the grace period past the frozen-head epoch, as a
competent Tune user sets it. The live comparison (real sweeps) is P5's arm (d).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from benchmarks.curves.sim import Answer, Job

MAX_T, GRACE = 12, 2
SETTINGS = {
    "scheduler": "ASHAScheduler",
    "time_attr": "epoch",
    "metric": "val_acc",
    "mode": "max",
    "max_t": MAX_T,
    "grace_period": GRACE,
    "reduction_factor": 4,
    "search": "Tune's default random search",
}


@dataclass
class _Trial:
    trial_id: str


def param_space() -> dict[str, Any]:
    from ray import tune

    from hpo.space import DEFAULT_SPACE

    out: dict[str, Any] = {}
    for name, spec in DEFAULT_SPACE.items():
        if "choices" in spec:
            out[name] = tune.choice(list(spec["choices"]))
        elif spec.get("log"):
            out[name] = tune.loguniform(spec["low"], spec["high"])
        else:
            out[name] = tune.uniform(spec["low"], spec["high"])
    return out


@dataclass
class TuneAshaArm:
    name: str = "ray-tune-asha"
    settings: dict[str, Any] = field(default_factory=lambda: dict(SETTINGS))

    def searcher(self, seed: int, n_trials: int | None, epochs: int, parallel: int) -> TuneAshaSearcher:
        return TuneAshaSearcher(seed, n_trials)


class TuneAshaSearcher:
    def __init__(self, seed: int, n_trials: int | None) -> None:
        from ray.tune.schedulers import ASHAScheduler

        np.random.seed(seed)  # the bracket draw uses numpy's global generator
        self.rng = np.random.default_rng(seed)
        self.scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=MAX_T, grace_period=GRACE)
        self.space = param_space()
        self.n_trials, self.created = n_trials, 0
        self.last: dict[str, float] = {}

    def next_job(self) -> Job | None:
        if self.n_trials is not None and self.created >= self.n_trials:
            return None
        trial = _Trial(f"t{self.created}")
        self.created += 1
        self.scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
        params = {name: _plain(domain.sample(random_state=self.rng)) for name, domain in self.space.items()}
        return Job(trial, params)

    def report(self, job: Job, epoch: int, val: float) -> Answer:
        self.last[job.key.trial_id] = val
        action = self.scheduler.on_trial_result(None, job.key, {"epoch": epoch, "val_acc": val})  # type: ignore[arg-type]
        if epoch >= MAX_T:
            return "continue"  # Tune stops every trial at max_t: that is completion
        return "prune" if action == "STOP" else "continue"

    def finished(self, job: Job, state: Literal["COMPLETE", "PRUNED"], value: float | None) -> None:
        if state == "COMPLETE":
            result = {"epoch": job.done, "val_acc": self.last[job.key.trial_id]}
            self.scheduler.on_trial_complete(None, job.key, result)  # type: ignore[arg-type]
        else:
            self.scheduler.on_trial_remove(None, job.key)  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
