"""The Optuna study behind a sweep: create or load it, reap trials a dead driver left RUNNING,
count trials, pick the best. Selection and counting are pure functions of the trials."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import fingerprint as fingerprints
from hpo.errors import ConfigError, StudyNotFoundError
from hpo.fingerprint import Change
from hpo.ranking import better, primary, ranks

#: Study user attrs hpo writes (optuna-dashboard shows them).
ATTR_METRIC = "metric"
ATTR_HPO_VERSION = "hpo_version"
ATTR_OBJECTIVES = "objectives"  # a multi-objective study's objectives, primary first
ATTR_FINGERPRINT = "hpo:fingerprint"  # what makes its trials comparable (hpo.fingerprint): checked by every sweep
ATTR_CHANGES = "hpo:changes"  # the fingerprint changes a sweep was allowed (--allow-changes): when, hpo, fields
ATTR_VERIFY = "hpo:verify"  # the last ``hpo verify`` verdict on the exported best config (a JSON dict)
#: Trial user attrs hpo writes.
ATTR_TRAIN_CONFIG = "train_config"
ATTR_FAIL_REASON = "fail_reason"
ATTR_FAIL_KIND = "fail_kind"  # a FailureKind value (trial, infra, lost, gpu_memory, stopped, ...)
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
#: A multi-objective trial's per-epoch primary metric ({"1": 0.52, ...}). Optuna keeps no intermediate values
#: for such studies (``trial.report`` refuses, and its TPE fails on a PRUNED trial that has them), so hpo keeps
#: them here; ``curve`` reads either.
ATTR_CURVE = "intermediate_values"
#: A paused trial (``pruner: {type: asha}``): Optuna state WAITING with this system attr, the epoch it paused at
#: (it stays once the trial resumes: "last paused at"). hpo's ask never takes such a WAITING trial as an enqueued
#: one; the sampler sees it as PRUNED with its curve (``hpo.coordinator.sampling``).
SYS_PAUSED = "hpo:paused"
ATTR_PAUSED_AT = "paused_at_epoch"  # the same epoch, for humans (the dashboard shows user attrs)
ATTR_PRUNED_REASON = "pruned_reason"  # why a paused trial was given up (told PRUNED)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def default_startup_trials(n_trials: int | None) -> int:
    """TPE's random start-up trials for a sweep of ``n_trials``: a fifth of the budget, at least 4 and at most
    Optuna's 10 (the learning-curve benchmark's tuning phase kept it, benchmarks/curves/RESULTS.md; Optuna's
    fixed 10 leaves a 12-trial sweep random search). Unknown budget: Optuna's 10."""
    if n_trials is None:
        return 10
    return max(4, min(10, round(n_trials / 5)))


def make_sampler(
    name: str = "tpe",
    seed: int | None = None,
    *,
    parallel: int = 1,
    conditional: bool = False,
    startup_trials: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``study.sampler`` names. Samplers are not stored in the database, so every process
    that asks trials builds its own from the config (the coordinator gets plain values: no config model).

    TPE runs ``startup_trials`` random trials first (``default_startup_trials`` of the budget), then models the
    parameters jointly (``multivariate``; ``group`` when a space has conditional parameters), with
    ``constant_liar`` when trials run in parallel so that it does not propose again where trials are still
    running. The learning-curve benchmark's tuning phase kept these (README, "How the search defaults were chosen").
    """
    s = optuna.samplers
    if name == "tpe":
        startup = 10 if startup_trials is None else startup_trials
        return s.TPESampler(
            seed=seed,
            n_startup_trials=startup,
            multivariate=True,
            group=conditional,
            constant_liar=parallel > 1,
        )
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


def create_or_load(storage: Any, name: str, *, directions: Sequence[str]) -> optuna.Study:
    """The study ``name``, created if missing (one direction: a single-objective study; more: a multi-objective
    one). Writes nothing to an existing study: ``check_continue`` and ``record_config`` run once the sweep holds
    the study's lease."""
    wanted: Any = list(directions)
    return optuna.create_study(study_name=name, storage=storage, directions=wanted, load_if_exists=True)


def check_continue(
    name: str,
    attrs: Mapping[str, Any],
    have_directions: Sequence[str],
    fingerprint: Mapping[str, Any],
    *,
    allow_changes: bool = False,
) -> list[Change]:
    """Whether a sweep whose config resolves to ``fingerprint`` may continue study ``name`` (its user ``attrs``
    and directions): ``ConfigError`` in one line when not, else the changes to record (``allow_changes``).

    Other objectives are refused even with ``allow_changes``: the trials' values would be read as the new
    objectives. Any other change of the recorded fingerprint is refused unless ``allow_changes``; a study without
    one (made by an older hpo, or by Optuna) has nothing to compare and gets one. Pure."""
    values = fingerprint["values"]
    objectives_problem(name, attrs, have_directions, list(values["study.objectives"]))
    recorded = attrs.get(ATTR_FINGERPRINT)
    if not isinstance(recorded, Mapping):
        return []
    changes = fingerprints.compare(recorded, fingerprint)
    if changes and not allow_changes:
        old_version = recorded.get("hpo_version")
        raise ConfigError(
            fingerprints.refusal(name, changes, old_version=old_version, new_version=str(fingerprint["hpo_version"]))
        )
    return changes


def objectives_problem(name: str, attrs: Mapping[str, Any], have_directions: Sequence[str], wanted: list[str]) -> None:
    """``ConfigError`` when study ``name`` optimizes other objectives than ``wanted`` (or the same ones in other
    directions): continuing would relabel its trials' values."""
    from hpo.config import OBJECTIVES

    directions = [OBJECTIVES[m] for m in wanted]
    have = [str(d) for d in have_directions]
    if have != directions:
        field = "study.direction" if len(directions) == 1 and len(have) == 1 else "study.metrics"
        raise ConfigError(f"{field}: study {name!r} already exists and is to {have}, got {directions}")
    existing = attrs.get(ATTR_METRIC)
    if existing is not None and existing != wanted[0]:
        raise ConfigError(f"study.metric: study {name!r} already exists and optimizes {existing!r}, got {wanted[0]!r}")
    recorded = attrs.get(ATTR_OBJECTIVES) or _recorded_objectives(attrs)
    if recorded and len(wanted) > 1 and [str(m) for m in recorded] != wanted:
        raise ConfigError(
            f"study.metrics: study {name!r} already exists and optimizes {list(recorded)}, got {wanted}: its trials' "
            f"values would be read as the new objectives; use another --study"
        )


def _recorded_objectives(attrs: Mapping[str, Any]) -> list[str] | None:
    recorded = attrs.get(ATTR_FINGERPRINT)
    if isinstance(recorded, Mapping) and isinstance(recorded.get("values"), Mapping):
        value = recorded["values"].get("study.objectives")
        return list(value) if isinstance(value, list) else None
    return None


def record_config(study: optuna.Study, fingerprint: Mapping[str, Any], changes: Sequence[Change]) -> None:
    """Record on ``study`` what a sweep that may continue it (``check_continue``) runs with: metric, objectives,
    hpo version and fingerprint, and the ``changes`` it was allowed (appended to ``hpo:changes``). Call it only
    while holding the study's lease."""
    objectives = [str(m) for m in fingerprint["values"]["study.objectives"]]
    version = str(fingerprint["hpo_version"])
    attrs = study.user_attrs
    if attrs.get(ATTR_METRIC) is None:
        study.set_user_attr(ATTR_METRIC, objectives[0])
    if len(objectives) > 1 and attrs.get(ATTR_OBJECTIVES) != objectives:
        study.set_user_attr(ATTR_OBJECTIVES, objectives)
    if attrs.get(ATTR_HPO_VERSION) != version:
        study.set_user_attr(ATTR_HPO_VERSION, version)
    if changes:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        logged = attrs.get(ATTR_CHANGES)
        entry = fingerprints.change_log_entry(changes, version=version, when=when)
        study.set_user_attr(ATTR_CHANGES, [*(logged if isinstance(logged, list) else []), entry])
    if attrs.get(ATTR_FINGERPRINT) != dict(fingerprint):
        study.set_user_attr(ATTR_FINGERPRINT, dict(fingerprint))


def objectives(study: optuna.Study) -> list[str]:
    """What a study optimizes, primary first (hpo records them; a stock study: its metric, or value)."""
    recorded = study.user_attrs.get(ATTR_OBJECTIVES)
    if recorded:
        return [str(m) for m in recorded]
    metric = str(study.user_attrs.get(ATTR_METRIC, "value"))
    return [metric] + [f"value{i}" for i in range(1, len(study.directions))]


def primary_direction(study: optuna.Study) -> str:
    """The study's direction, or its primary objective's (``Study.direction`` raises for several)."""
    return str(study.directions[0].name.lower())


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal COMPLETE trials of a multi-objective study (by number); [] for one objective."""
    if len(study.directions) < 2:
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


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


def is_paused(trial: FrozenTrial) -> bool:
    """A trial paused by asha: WAITING, with ``SYS_PAUSED`` (an enqueued trial has no such attr)."""
    return trial.state == TrialState.WAITING and trial.system_attrs.get(SYS_PAUSED) is not None


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
        value = primary(t)
        ranked = t.state == TrialState.COMPLETE and ranks(value)
        if ranked and (best is None or better(float(value), float(primary(best)), direction)):  # type: ignore[arg-type]
            best = t
    return best


def trial_train_config(trial: FrozenTrial) -> dict[str, Any] | None:
    """The full training config a trial ran with (hpo records it when it asks the trial)."""
    raw = trial.user_attrs.get(ATTR_TRAIN_CONFIG)
    if raw is None:
        return None
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def curve(trial: FrozenTrial) -> dict[int, float]:
    """A trial's per-epoch primary metric: Optuna's intermediate values, or (multi-objective) hpo's copy."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    raw = trial.user_attrs.get(ATTR_CURVE) or {}
    return {int(k): float(v) for k, v in raw.items()}


def with_curve(trial: FrozenTrial) -> FrozenTrial:
    """``trial`` with its curve as intermediate values (for code that reads those, such as the pruners)."""
    if trial.intermediate_values or ATTR_CURVE not in trial.user_attrs:
        return trial
    out = copy.copy(trial)
    out.intermediate_values = curve(trial)
    return out
