"""The Optuna study behind a sweep: create or load it, reap trials a dead driver left RUNNING,
count trials, pick the best. Selection and counting are pure functions of the trials."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import ConfigError, StudyNotFoundError
from hpo.ranking import better, ranks

#: Study user attrs hpo writes (optuna-dashboard shows them).
ATTR_METRIC = "metric"
ATTR_HPO_VERSION = "hpo_version"
ATTR_VERIFY = "hpo:verify"  # the last ``hpo verify`` verdict on the exported best config (a JSON dict)
#: Trial user attrs hpo writes.
ATTR_TRAIN_CONFIG = "train_config"
ATTR_FAIL_REASON = "fail_reason"
ATTR_FAIL_KIND = "fail_kind"  # trial | infra | environment | interrupted | not_started (FailureKind)
ATTR_STOP_REASON = "stop_reason"
ATTR_EPOCHS_RUN = "epochs_run"
ATTR_BEST_EPOCH = "best_epoch"
ATTR_DURATION = "duration_s"
ATTR_QUEUED = "queued_s"  # from the driver submitting the trial to a worker starting it
ATTR_METRICS = "metrics"
ATTR_NODE = "node"
ATTR_RETRY_OF = "retry_of"
ATTR_ATTEMPT = "attempt"
ATTR_RETRIED_BY = "retried_by"
ATTR_RESUMED_FROM = "resumed_from_epoch"
ATTR_CHECKPOINT_DIR = "checkpoint_dir"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def make_sampler(
    name: str = "tpe", seed: int | None = None, *, parallel: int = 1, conditional: bool = False
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``study.sampler`` names. Samplers are not stored in the database, so every process
    that asks trials builds its own from the config (the coordinator gets plain values: no config model)."""
    s = optuna.samplers
    if name == "tpe":
        # constant_liar keeps parallel TPE from proposing the same point for trials still running; a space
        # with conditional parameters is modelled per group of parameters that occur together (group=True)
        if conditional:
            return s.TPESampler(seed=seed, constant_liar=parallel > 1, multivariate=True, group=True)
        return s.TPESampler(seed=seed, constant_liar=parallel > 1)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "qmc":
        return s.QMCSampler(seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("study.sampler.name: 'cmaes' needs the cmaes package (pip install cmaes)") from None
        return s.CmaEsSampler(seed=seed)
    raise ConfigError(f"study.sampler.name: unknown sampler {name!r}")


def create_or_load(
    storage: Any, name: str, *, direction: Literal["maximize", "minimize"], metric: str, version: str
) -> optuna.Study:
    """The study ``name``, created if missing; an existing study must optimize the same metric the same way."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study.direction: study {name!r} already exists and is to "
            f"{study.direction.name.lower()}, got {direction!r}"
        )
    existing = study.user_attrs.get(ATTR_METRIC)
    if existing is not None and existing != metric:
        raise ConfigError(f"study.metric: study {name!r} already exists and optimizes {existing!r}, got {metric!r}")
    if existing is None:
        study.set_user_attr(ATTR_METRIC, metric)
    study.set_user_attr(ATTR_HPO_VERSION, version)
    return study


def load(storage: Any, name: str) -> optuna.Study:
    """An existing study, or ``StudyNotFoundError`` listing the studies that do exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        known = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"
        raise StudyNotFoundError(f"study {name!r} not found (studies in this storage: {known})") from None


def running_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def reap_running(study: optuna.Study, reason: str) -> list[int]:
    """Mark every RUNNING trial FAIL with ``reason`` (their driver is gone); returns their numbers."""
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, ATTR_FAIL_REASON, reason)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        reaped.append(t.number)
    return reaped


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), every state present."""
    counts = Counter(t.state.name for t in trials)
    return {s.name: counts.get(s.name, 0) for s in TrialState}


def n_finished(trials: Iterable[FrozenTrial]) -> int:
    """COMPLETE + PRUNED: the trials that count towards ``n_trials``."""
    return sum(1 for t in trials if t.state in FINISHED)


def select_best(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The COMPLETE trial with the best finite value; ties go to the earliest trial. None if there is none.

    PRUNED trials never win: their value is an intermediate one, from a run that did not finish.
    """
    best: FrozenTrial | None = None
    for t in sorted(trials, key=lambda t: t.number):
        ranked = t.state == TrialState.COMPLETE and ranks(t.value)
        if ranked and (best is None or better(float(t.value), float(best.value), direction)):  # type: ignore[arg-type]
            best = t
    return best


def trial_train_config(trial: FrozenTrial) -> dict[str, Any] | None:
    """The full training config a trial ran with (hpo records it when it asks the trial)."""
    raw = trial.user_attrs.get(ATTR_TRAIN_CONFIG)
    if raw is None:
        return None
    return json.loads(raw) if isinstance(raw, str) else dict(raw)
