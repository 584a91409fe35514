"""The sampler learns from trials that ran out of GPU memory.

Optuna's samplers ignore FAIL trials, so a sweep would keep proposing the batch size and model that just ran
out of memory. ``LearnsFromGpuMemory`` wraps the sweep's sampler and shows it each such trial (FAIL in the
study, ``fail_kind: gpu_memory``) as what it is to the search: an infeasible point, a PRUNED trial whose
constraint ``gpu_memory`` is violated. TPE puts infeasible trials with the bad ones (its "above" group), so
it moves away from that region. The study itself is not changed: the trial stays FAIL, with its reason.

The same view shows each trial that asha paused (WAITING, ``hpo:paused``), which Optuna's samplers would skip,
as what it is to the search so far: a PRUNED trial with its curve (TPE ranks pruned trials by their last
intermediate value). It stays WAITING in the study, and may resume.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from hpo import study as studies

#: Optuna's constraint key prefix (``optuna.study._constrained_optimization``): a value > 0 is infeasible.
CONSTRAINT_KEY = "constraints:gpu_memory"


def out_of_gpu_memory(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get(studies.ATTR_FAIL_KIND) == "gpu_memory"


def as_infeasible(trial: FrozenTrial) -> FrozenTrial:
    """The trial as the sampler should see it: PRUNED, no curve, its gpu_memory constraint violated."""
    out = copy.copy(trial)
    out.state = TrialState.PRUNED
    out.intermediate_values = {}
    out.system_attrs = {**trial.system_attrs, CONSTRAINT_KEY: 1.0}
    return out


def as_pruned(trial: FrozenTrial) -> FrozenTrial:
    """A paused trial as the sampler should see it: PRUNED, its intermediate values kept."""
    out = copy.copy(trial)
    out.state = TrialState.PRUNED
    return out


def _shown(trial: FrozenTrial) -> FrozenTrial:
    if out_of_gpu_memory(trial):
        return as_infeasible(trial)
    if studies.is_paused(trial):
        return as_pruned(trial)
    return trial


class _StudyView:
    """The study as the wrapped sampler reads it: every attribute the study's, and its trials with the
    out-of-memory ones shown as infeasible PRUNED trials, the paused ones as PRUNED trials with their curve."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        shown = [_shown(t) for t in trials]
        return shown if states is None else [t for t in shown if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()


class LearnsFromGpuMemory(BaseSampler):
    """``inner`` (the sweep's sampler), shown the trials that ran out of GPU memory as infeasible."""

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(_StudyView(study), trial)  # type: ignore[arg-type]

    def sample_relative(
        self, study: Any, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(_StudyView(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(
        self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.inner.sample_independent(
            _StudyView(study),  # type: ignore[arg-type]
            trial,
            param_name,
            param_distribution,
        )

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
