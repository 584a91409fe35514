"""Before the loop: create the schema and the study, take its lease (atomically), warm-start, and find the
trials a lost driver left RUNNING. Then close the connections: while trials run, the coordinator is the
only database client."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import hpo
from hpo import fingerprint as fingerprints
from hpo import study as studies
from hpo.config import SweepConfig, load_train_file
from hpo.errors import ConfigError, StudyBusyError
from hpo.ranking import Best
from hpo.space import flatten, sample
from hpo.sweep import lease
from storage import StorageError, opened

DRIVER_LOST = "driver lost: the trial was RUNNING when a new sweep on its study started"


@dataclass
class Prepared:
    finished: int
    counts: dict[str, int]
    best: Best | None
    orphans: list[int]  # ids of trials a lost driver left RUNNING: the coordinator reaps (and retries) them
    reaped: list[int]  # numbers of those failed here (the study needs no more trials: none is retried)
    paused: int = 0  # trials asha paused (WAITING, ``hpo:paused``): the coordinator may resume them


def prepare_study(
    cfg: SweepConfig,
    *,
    mine: lease.Lease,
    enqueue: str | None = None,
    allow_changes: bool = False,
    fingerprint: dict[str, Any] | None = None,
) -> Prepared:
    """Create the schema and the study and take its lease for ``mine`` (``StudyBusyError`` naming the holder
    when another live sweep has it); then, the lease ours, check that the config may continue the study and
    record it (``ConfigError`` on a changed config, the lease given back: nothing written); then warm-start
    and count. ``fingerprint``: ``hpo.fingerprint.of_config(cfg)`` where the caller has it."""
    url = cfg.storage or ""
    fp = fingerprint or fingerprints.of_config(cfg, hpo.__version__)
    with opened(url, create_schema=True) as storage:
        study = studies.create_or_load(storage, cfg.study_name, directions=cfg.directions)
        held = lease.acquire(url, storage, study._study_id, mine)
        if held is not None:
            raise _busy(cfg.study_name, held)
        try:
            changes = _check_continue(study, cfg.study_name, fp, allow_changes)
        except ConfigError:
            lease.release(url, storage, study._study_id, str(mine["owner"]))
            raise
        studies.record_config(study, fp, changes)
        if enqueue:
            _enqueue(study, cfg, enqueue)
        return _count(study, cfg)


def refuse_if_busy(cfg: SweepConfig) -> None:
    """``StudyBusyError`` now, before Ray starts, when another live sweep holds the study's lease: a quick look
    that writes nothing (no schema, no study). ``prepare_study`` takes the lease atomically later."""
    url = cfg.storage or ""
    try:
        # no schema-version check (queries and an Alembic import): prepare_study makes it right after
        with opened(url, connect_timeout=5, check_version=False) as storage:
            study_id = storage.get_study_id_from_name(cfg.study_name)
            held, now = lease.peek(storage, study_id)  # the database's clock: heartbeats are written by it
    except (StorageError, KeyError):
        return  # no storage, schema or study yet: nobody holds it
    if held and lease.is_live(held, now=now, host=lease.here()):
        raise _busy(cfg.study_name, held, now)


def refuse_if_changed(cfg: SweepConfig, *, allow_changes: bool = False) -> dict[str, Any]:
    """``ConfigError`` now, before Ray starts, when the study exists and the config may not continue it (other
    objectives; or, unless ``allow_changes``, a changed fingerprint): a quick look that writes nothing.
    ``prepare_study`` checks again under the lease. Returns the config's fingerprint (for ``prepare_study``)."""
    fp = fingerprints.of_config(cfg, hpo.__version__)
    try:
        with opened(cfg.storage or "", connect_timeout=5, check_version=False) as storage:
            study_id = storage.get_study_id_from_name(cfg.study_name)
            attrs = storage.get_study_user_attrs(study_id)
            directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    except (StorageError, KeyError):
        return fp  # no storage, schema or study yet: nothing to continue
    studies.check_continue(cfg.study_name, attrs, directions, fp, allow_changes=allow_changes)
    return fp


def _check_continue(study: Any, name: str, fp: dict[str, Any], allow_changes: bool) -> list[fingerprints.Change]:
    directions = [d.name.lower() for d in study.directions]
    return studies.check_continue(name, study.user_attrs, directions, fp, allow_changes=allow_changes)


def _busy(name: str, held: lease.Lease, now: float | None = None) -> StudyBusyError:
    """``now``: the database's clock, where the caller read it (the age shown is approximate without it)."""
    holder = lease.describe(held, time.time() if now is None else now)
    return StudyBusyError(
        f"study {name!r} is being run by another hpo sweep ({holder}); wait for it to finish (a lease without "
        f"heartbeat expires after {lease.ttl_of(held):.0f}s) or use another --study"
    )


def _count(study: Any, cfg: SweepConfig) -> Prepared:
    trials = study.get_trials(deepcopy=False)
    finished = studies.n_finished(trials)
    orphans, reaped = [t._trial_id for t in studies.running_trials(study)], []
    if finished >= cfg.study.n_trials and orphans:  # nothing will run: fail them here, no retries
        reaped, orphans = studies.reap_running(study, DRIVER_LOST), []
        trials = study.get_trials(deepcopy=False)
    best = studies.select_best(trials, str(cfg.study.direction))
    return Prepared(
        finished=finished,
        counts=studies.state_counts(trials),
        best=None if best is None else Best.of(best),
        orphans=orphans,
        reaped=reaped,
        paused=sum(1 for t in trials if studies.is_paused(t)),
    )


def release_lease(url: str, name: str, owner: str) -> None:
    """Give the study's lease up if this sweep still holds it (best effort: the database may be gone)."""
    with contextlib.suppress(Exception), opened(url, connect_timeout=5) as storage:  # else it expires (its TTL)
        lease.release(url, storage, storage.get_study_id_from_name(name), owner)


def _enqueue(study: Any, cfg: SweepConfig, path: str) -> None:
    """Warm-start: queue the searched params of an exported config as the next trial."""
    space = cfg.space
    exported = flatten(load_train_file(path).train.to_dict())
    params = sample(space.distributions, space.conditions, exported, lambda name, _dist: exported[name])
    study.enqueue_trial(params, skip_if_exists=True)
