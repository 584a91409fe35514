"""Before the loop: create the schema and the study, take its lease (atomically), warm-start, and find the
trials a lost driver left RUNNING. Then close the connections: while trials run, the coordinator is the
only database client."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any

import hpo
from hpo import study as studies
from hpo.config import SweepConfig, load_train_file
from hpo.errors import StudyBusyError
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


def prepare_study(cfg: SweepConfig, *, mine: lease.Lease, enqueue: str | None = None) -> Prepared:
    """Create the schema and the study and take its lease for ``mine`` (``StudyBusyError`` naming the holder
    when another live sweep has it); then warm-start and count."""
    url = cfg.storage or ""
    with opened(url, create_schema=True) as storage:
        study = studies.create_or_load(
            storage, cfg.study_name, objectives=cfg.objectives, directions=cfg.directions, version=hpo.__version__
        )
        held = lease.acquire(url, storage, study._study_id, mine)
        if held is not None:
            raise _busy(cfg.study_name, held)
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
            held = lease.read(storage, study_id)
    except (StorageError, KeyError):
        return  # no storage, schema or study yet: nobody holds it
    if held and lease.is_live(held, now=time.time(), host=socket.gethostname()):
        raise _busy(cfg.study_name, held)


def _busy(name: str, held: lease.Lease) -> StudyBusyError:
    return StudyBusyError(
        f"study {name!r} is being run by another hpo sweep ({lease.describe(held, time.time())}); "
        f"wait for it to finish (a lease without heartbeat expires after {lease.TTL:.0f}s) or use another --study"
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
    )


def release_lease(url: str, name: str, owner: str) -> None:
    """Give the study's lease up if this sweep still holds it (best effort: the database may be gone)."""
    with contextlib.suppress(Exception), opened(url, connect_timeout=5) as storage:  # else it expires (lease.TTL)
        lease.release(url, storage, storage.get_study_id_from_name(name), owner)


def _enqueue(study: Any, cfg: SweepConfig, path: str) -> None:
    """Warm-start: queue the searched params of an exported config as the next trial."""
    space = cfg.space
    exported = flatten(load_train_file(path).train.to_dict())
    params = sample(space.distributions, space.conditions, exported, lambda name, _dist: exported[name])
    study.enqueue_trial(params, skip_if_exists=True)
