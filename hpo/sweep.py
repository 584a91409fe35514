"""The sweep loop: ask, dispatch on Ray, tell, until ``n_trials`` trials have finished.

The driver holds no database connection while trials run: the coordinator actor owns the study.
Before Ray starts, the driver validates everything, creates the schema and the study, and marks
trials a dead driver left RUNNING as FAIL ("driver lost"), retrying them if the config allows.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

import hpo
from hpo import lease, outcomes
from hpo import study as studies
from hpo.config import SweepConfig, load_train_file
from hpo.coordinator import Asked, Outcome
from hpo.dispatch import (
    Workload,
    fit_parallel,
    ray_session,
    start_coordinator,
    train_workload,
    trial_task,
    warm_workers,
)
from hpo.errors import ConfigError, StudyBusyError, SweepError
from hpo.progress import Clock, LineObserver, Observer, format_duration
from storage import StorageError, close_storage, mask_url, open_storage, storage_errors
from trials.errors import TrialsError

DRIVER_LOST = "driver lost: the trial was RUNNING when a new sweep on its study started"
INTERRUPTED = "interrupted"
TICK_SECONDS = 1.0
ASK_AHEAD = 2  # at most this many trials asked ahead of a free slot


@dataclass
class SweepResult:
    study: str
    storage: str  # password masked
    counts: dict[str, int]
    best: dict[str, Any] | None
    launched: int
    failed_now: int
    elapsed_s: float
    stopped: str  # target reached | nothing to do | timeout | failure budget | interrupted | cancelled
    exit_code: int


@dataclass
class _Prepared:
    finished: int
    counts: dict[str, int]
    best: dict[str, Any] | None
    orphans: list[int]  # ids of trials a lost driver left RUNNING: the coordinator reaps (and retries) them
    reaped: list[int]


class Stopper:
    """Ctrl-C: the first request stops launching; the second cancels running trials."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()

    def request(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    @property
    def draining(self) -> bool:
        return self.requests >= 1

    @property
    def cancelling(self) -> bool:
        return self.requests >= 2


@dataclass
class _Running:
    asked: Asked
    attempt: int
    started: float = field(default_factory=time.monotonic)


def preflight(cfg: SweepConfig) -> None:
    """Cheap checks of the data, model and weights before anything is written (no training)."""
    from trials.preflight import check

    try:
        check(cfg.base_train)
    except TrialsError as e:
        raise ConfigError(f"train: {e}") from None


def prepare_study(cfg: SweepConfig, *, owner: str, enqueue: str | None = None) -> _Prepared:
    """Create the schema and the study, take its lease, reap trials left RUNNING, warm-start; then close
    the connections."""
    url = cfg.storage or ""
    storage = open_storage(url, create_schema=True)
    try:
        with storage_errors(url, "storage error on"):
            study = studies.create_or_load(
                storage,
                cfg.study_name,
                direction=cfg.direction,
                metric=cfg.study.metric,
                version=hpo.__version__,
            )
            _acquire_lease(storage, study._study_id, cfg.study_name, owner)
            if enqueue:
                _enqueue(study, cfg, enqueue)
            trials = study.get_trials(deepcopy=False)
            finished = studies.n_finished(trials)
            orphans, reaped = [t._trial_id for t in studies.running_trials(study)], []
            if finished >= cfg.study.n_trials and orphans:  # nothing will run: fail them here, no retries
                reaped, orphans = studies.reap_running(study, DRIVER_LOST), []
                trials = study.get_trials(deepcopy=False)
            best = studies.select_best(trials, str(cfg.study.direction))
            return _Prepared(
                finished=finished,
                counts=studies.state_counts(trials),
                best=None if best is None else {"number": best.number, "value": best.value, "params": best.params},
                orphans=orphans,
                reaped=reaped,
            )
    finally:
        close_storage(storage)


def _acquire_lease(storage: Any, study_id: int, name: str, owner: str) -> None:
    """Take the study's lease, or refuse when another live sweep holds it."""

    def refuse(held: dict[str, Any]) -> StudyBusyError:
        return StudyBusyError(
            f"study {name!r} is being run by another hpo sweep ({lease.describe(held, time.time())}); "
            f"wait for it to finish (a lease without heartbeat expires after {lease.TTL:.0f}s) or use another --study"
        )

    held = lease.read(storage, study_id)
    if held and held.get("owner") != owner and lease.is_live(held, now=time.time(), host=socket.gethostname()):
        raise refuse(held)
    lease.write(storage, study_id, lease.new_lease(owner))
    # Two sweeps that both found no lease both wrote one; the later write wins. The loser finds out at its
    # coordinator's first heartbeat, a second or more later and before it touches any trial.


def release_lease(url: str, name: str, owner: str) -> None:
    """Give the study's lease up if this sweep still holds it (best effort: the database may be gone)."""
    with contextlib.suppress(Exception):
        storage = open_storage(url, create_schema=False, connect_timeout=5)
        try:
            study_id = storage.get_study_id_from_name(name)
            held = lease.read(storage, study_id)
            if held and held.get("owner") == owner:
                lease.write(storage, study_id, None)
        finally:
            close_storage(storage)


def _enqueue(study: Any, cfg: SweepConfig, path: str) -> None:
    """Warm-start: queue the searched params of an exported config as the next trial."""
    train = load_train_file(path).train.to_dict()
    params = {}
    for name in cfg.space.distributions:
        node: Any = train
        for part in name.split("."):
            node = node[part]
        params[name] = node
    study.enqueue_trial(params, skip_if_exists=True)


def run_sweep(
    cfg: SweepConfig,
    *,
    ray_address: str | None = None,
    workload: Workload = train_workload,
    observer: Observer | None = None,
    enqueue: str | None = None,
    check_data: bool = True,
    stopper: Stopper | None = None,
    handle_sigint: bool = True,
) -> SweepResult:
    """Run (or continue) the sweep ``cfg`` until its study has ``n_trials`` finished trials.

    ``workload`` is what each trial runs on a worker (default: ``trials.train.fit``); it must be importable
    there. Raises ``ConfigError``/``StorageError`` before touching the study when the input is bad;
    returns a ``SweepResult`` whose ``exit_code`` is 1 when the failure budget was spent and 130 when
    the user interrupted.
    """
    obs = observer or LineObserver(metric=cfg.study.metric)
    stopper = stopper or Stopper()
    if check_data:
        preflight(cfg)
    if enqueue:
        load_train_file(enqueue)  # validate before the study is touched
    owner = uuid.uuid4().hex
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    with contextlib.ExitStack() as stack:
        # a cluster (or a Ray this process already runs) is joined before the study is touched, so an
        # unreachable one writes nothing, and the coordinator's process starts while the study is prepared;
        # a local Ray is started only once there is work to do
        coordinator: _CoordinatorActor | None = None
        info = stack.enter_context(ray_session(address)) if address or ray.is_initialized() else None
        if info is not None:
            parallel = _parallel(cfg, info)
            coordinator = stack.enter_context(_CoordinatorActor.start(cfg, parallel, owner, workload))
        prepared = prepare_study(cfg, owner=owner, enqueue=enqueue)
        target = cfg.study.n_trials
        storage_shown = mask_url(cfg.storage or "")
        obs.message(f"study {cfg.study_name!r} on {storage_shown}: {prepared.finished}/{target} trials finished")
        if prepared.reaped:
            obs.message(
                f"marked {len(prepared.reaped)} trial(s) left RUNNING by a lost driver as FAIL: {prepared.reaped}"
            )
        if prepared.finished >= target:
            release_lease(cfg.storage or "", cfg.study_name, owner)
            obs.message(f"nothing to do: the study already has {prepared.finished} finished trials (n_trials={target})")
            return SweepResult(
                cfg.study_name, storage_shown, prepared.counts, prepared.best, 0, 0, 0.0, "nothing to do", 0
            )
        previous = _install_sigint(stopper, obs) if handle_sigint else None
        try:
            if info is None:
                info = stack.enter_context(ray_session(None))
                parallel = _parallel(cfg, info)
            if coordinator is None:
                coordinator = stack.enter_context(_CoordinatorActor.start(cfg, parallel, owner, workload))
            return _loop(cfg, info, parallel, coordinator, prepared, workload, obs, stopper)
        finally:
            # the coordinator gives the lease up as it closes; the driver does it only when that failed
            if coordinator is None or not coordinator.close():
                release_lease(cfg.storage or "", cfg.study_name, owner)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    raise AssertionError("unreachable")


def _parallel(cfg: SweepConfig, info: Any) -> int:
    """How many trials run at once: the config's ``parallel``, or what the cluster's resources fit."""
    res = cfg.resources
    if res.gpus_per_trial > 0 and info.gpus < res.gpus_per_trial:
        raise ConfigError(
            f"resources.gpus_per_trial: the Ray cluster has {info.gpus:g} GPUs, got {res.gpus_per_trial:g}"
        )
    if info.cpus < res.cpus_per_trial:
        raise ConfigError(
            f"resources.cpus_per_trial: the Ray cluster has {info.cpus:g} CPUs, got {res.cpus_per_trial:g}"
        )
    return cfg.parallel or fit_parallel(info, res.cpus_per_trial, res.gpus_per_trial)


def _checkpoint_root(cfg: SweepConfig) -> str:
    return str(Path(cfg.output_dir).expanduser().resolve() / cfg.study_name)


class _CoordinatorActor:
    """The sweep's coordinator actor: started unconnected (its process comes up while the driver works,
    and so do the first trials' workers), connected by the loop, closed once (giving the study's lease
    up) and killed."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.connecting = False  # set before ``connect`` is called: from then on it may hold a storage
        self._closed: bool | None = None

    @classmethod
    @contextlib.contextmanager
    def start(cls, cfg: SweepConfig, parallel: int, owner: str, workload: Workload) -> Iterator[_CoordinatorActor]:
        space = cfg.space
        res = cfg.resources
        actor = cls(
            start_coordinator(
                storage_url=cfg.storage,
                study_name=cfg.study_name,
                metric=cfg.study.metric,
                direction=cfg.study.direction,
                distributions=space.distributions,
                base_config=cfg.base_train.to_dict(),
                fixed_params=space.fixed,
                checkpoint_root=_checkpoint_root(cfg),
                sampler=cfg.study.sampler.name,
                seed=cfg.study.sampler.seed,
                rule=cfg.pruner.rule(),
                parallel=parallel,
                retry_timeout=cfg.storage_options.retry_timeout,
                driver_lease=lease.new_lease(owner),
            )
        )
        warm_workers(res.cpus_per_trial, res.gpus_per_trial, workload, parallel)
        try:
            yield actor
        finally:
            actor.close()

    def close(self) -> bool:
        """Close the coordinator (it runs the calls queued before this one first) and kill it. True when the
        study's lease needs no releasing by the driver (see ``Coordinator.close``)."""
        if self._closed is None:
            self._closed = False
            if self.connecting:  # one never connected holds nothing: it is only killed
                with contextlib.suppress(ray.exceptions.RayError):
                    self._closed = bool(ray.get(self.handle.close.remote(), timeout=30))
            ray.kill(self.handle)
        return self._closed


def _install_sigint(stopper: Stopper, obs: Observer) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        n = stopper.request()
        if n == 1:
            obs.message("Ctrl-C: no new trials will start; running trials will finish (Ctrl-C again cancels them)")
        elif n == 2:
            obs.message("Ctrl-C again: cancelling running trials")

    return signal.signal(signal.SIGINT, handler)


def _loop(
    cfg: SweepConfig,
    info: Any,
    parallel: int,
    actor: _CoordinatorActor,
    prepared: _Prepared,
    workload: Workload,
    obs: Observer,
    stopper: Stopper,
) -> SweepResult:
    res = cfg.resources
    where = (
        f"local Ray ({info.cpus:g} CPUs, {info.gpus:g} GPUs; logs in {info.temp_dir})"
        if info.temp_dir
        else (f"Ray at {info.address} ({info.cpus:g} CPUs, {info.gpus:g} GPUs)")
    )
    obs.message(f"running up to {parallel} trials at once on {where}")
    coordinator = actor.handle
    actor.connecting = True
    if not _call(coordinator.connect.remote()):  # it renews the lease: False when another sweep took it
        raise StudyBusyError(
            f"study {cfg.study_name!r} is being run by another hpo sweep that started at the same time"
        )
    checkpoint_root = _checkpoint_root(cfg)
    task = trial_task(res.cpus_per_trial, res.gpus_per_trial)
    threads = max(1, int(res.cpus_per_trial))
    clock = Clock()
    counts = dict(prepared.counts)
    best = prepared.best
    ready: list[tuple[Asked, int]] = []  # retries, created and linked, waiting for a free slot
    asking: list[ray.ObjectRef] = []  # trials asked ahead, the coordinator's answers not read yet
    telling: list[ray.ObjectRef] = []  # tells of finished trials, their summaries not read yet
    running: dict[ray.ObjectRef, _Running] = {}
    # Beyond the free slots, this many trials are asked ahead, so that freed slots start them at once (with one
    # slot there is nothing to overlap: the ask would only queue behind the trial's reports).
    ahead = min(parallel, ASK_AHEAD) if parallel > 1 else 0
    launched = failed_now = 0
    stopped = "target reached"
    target = cfg.study.n_trials
    deadline = time.monotonic() + cfg.study.timeout if cfg.study.timeout else math.inf
    last_tick = last_heartbeat = time.monotonic()
    live: ray.ObjectRef | None = None  # the coordinator's answers to the progress view and the heartbeat
    beat: ray.ObjectRef | None = None

    def finished() -> int:
        return counts["COMPLETE"] + counts["PRUNED"]

    def committed() -> int:
        # trials finished or on their way: told (or being told), running, and waiting for a slot
        return finished() + len(telling) + len(running) + len(ready) + len(asking)

    def record(summary: dict[str, Any]) -> None:
        nonlocal best, failed_now
        counts["RUNNING"] = max(0, counts.get("RUNNING", 0) - 1)
        counts[summary["state"]] = counts.get(summary["state"], 0) + 1
        if summary["state"] == "COMPLETE" and summary["value"] is not None and _better(summary["value"], best, cfg):
            best = {"number": summary["number"], "value": summary["value"], "params": summary["params"]}
        if summary["state"] == "FAIL":
            failed_now += 1
        obs.trial_finished(summary, counts, best)

    def tell(run: _Running, outcome: Outcome) -> None:
        if outcome.state != "FAIL":  # the summary is read later: nothing waits for it
            telling.append(coordinator.tell.remote(run.asked.trial_id, outcome))
            return
        # a failure is told at once: it may spend the budget, or queue a retry
        if outcomes.is_retryable(outcome.reason) and run.attempt <= cfg.retries and not stopper.draining:
            summary, asked = _call(coordinator.fail_and_retry.remote(run.asked.trial_id, outcome, run.attempt + 1))
            ready.append((asked, run.attempt + 1))
        else:
            summary = _call(coordinator.tell.remote(run.asked.trial_id, outcome))
        record(summary)

    def read_tells(wait: bool) -> None:
        if not telling:
            return
        done = telling if wait else ray.wait(telling, num_returns=len(telling), timeout=0)[0]
        for ref in list(done):
            telling.remove(ref)
            record(_call(ref))

    def launch(asked: Asked, attempt: int) -> None:
        nonlocal launched
        tb = f"{checkpoint_root}/tensorboard/trial-{asked.number:05d}" if cfg.tensorboard else None
        ref = task.remote(
            asked.trial_id,
            asked.train_config,
            asked.checkpoint_dir,
            asked.resume_from,
            coordinator,
            workload,
            threads,
            tb,
            time.time(),
        )
        running[ref] = _Running(asked, attempt)
        counts["RUNNING"] = counts.get("RUNNING", 0) + 1
        launched += 1

    def start_waiting() -> None:
        # a retry or a trial asked ahead takes a free slot; a retry replaces the trial it retries, so it
        # does not count against the target
        while len(running) < parallel and (ready or asking):
            if ready:
                launch(*ready.pop(0))
            else:
                launch(_call(asking.pop(0)), 1)

    def fill_slots() -> None:
        # the asks for the free slots and for ``ahead`` more go out together (never past the target); each
        # free slot starts as its answer comes
        wanted = parallel + ahead - len(running) - len(ready) - len(asking)
        asking.extend(coordinator.ask.remote() for _ in range(max(0, min(wanted, target - committed()))))
        start_waiting()

    if prepared.orphans:
        reaped, retries = _call(coordinator.reap.remote(prepared.orphans, DRIVER_LOST, cfg.retries))
        ready.extend(retries)
        counts["RUNNING"] -= len(reaped)
        counts["FAIL"] += len(reaped)
        obs.message(
            f"marked {len(reaped)} trial(s) left RUNNING by a lost driver as FAIL: {reaped}"
            + (f"; retrying {len(retries)} of them from their last checkpoints" if retries else "")
        )

    try:
        while True:
            if not stopper.draining and failed_now > cfg.max_failures:
                stopped = "failure budget"
                obs.message(
                    f"stopping: {failed_now} trials failed in this sweep (max_failures={cfg.max_failures}); "
                    "waiting for running trials"
                )
                stopper.request()
            if stopper.cancelling:
                for ref, run in list(running.items()):
                    ray.cancel(ref, force=True)
                    tell(run, Outcome("FAIL", None, INTERRUPTED))
                    del running[ref]
                stopped = "cancelled" if stopped != "failure budget" else stopped
                break
            if time.monotonic() >= deadline and stopped == "target reached":
                stopped = "timeout"
                obs.message(f"study.timeout of {cfg.study.timeout:g}s reached: no new trials; waiting for running ones")
            launching = not stopper.draining and stopped == "target reached"
            if launching:
                fill_slots()
            read_tells(wait=not running)
            # the progress view and the lease's heartbeat: asked now, their answers read once they are there
            # (the coordinator may be busy with tells and asks, and a trial may finish meanwhile)
            now = time.monotonic()
            if live is None and now - last_tick >= TICK_SECONDS:
                last_tick, live = now, coordinator.live.remote()
            if beat is None and now - last_heartbeat >= lease.HEARTBEAT:
                last_heartbeat, beat = now, coordinator.heartbeat.remote()
            if live is not None and _ready(live, wait=not running):
                obs.tick(_call(live), counts, best)
                live = None
            if beat is not None and _ready(beat, wait=not running):
                if not _call(beat):
                    raise SweepError(f"another hpo sweep took study {cfg.study_name!r} over; stopping this one")
                beat = None
            if not running:
                if launching and committed() < target:
                    continue  # a tell just read came back FAIL: the target needs another trial
                if stopper.draining and stopped == "target reached":
                    stopped = "interrupted"
                break
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            results = [(running.pop(ref), _outcome(ref, cfg.study.metric)) for ref in done]
            if launching and all(o.state != "FAIL" for _, o in results):  # a failure may spend the budget
                start_waiting()  # then tell
            for run, outcome in results:
                tell(run, outcome)
        # retries (or trials asked ahead) the sweep stopped before they could start
        ready.extend((_call(ref), 1) for ref in asking)
        asking.clear()
        for asked, _attempt in ready:
            _call(coordinator.tell.remote(asked.trial_id, Outcome("FAIL", None, "not started: the sweep stopped")))
        ready.clear()
        read_tells(wait=True)
    except StorageError as e:
        raise SweepError(
            f"lost the storage for more than storage_options.retry_timeout="
            f"{cfg.storage_options.retry_timeout:g}s: {e}; finished trials are saved, "
            "running ones will be marked FAIL by the next sweep"
        ) from e
    finally:
        for ref in running:
            ray.cancel(ref, force=True)

    if stopper.draining and stopped == "target reached":
        stopped = "interrupted"
    exit_code = {"failure budget": 1, "interrupted": 130, "cancelled": 130}.get(stopped, 0)
    elapsed = clock.elapsed()
    summary = (
        f"{stopped}: {finished()}/{target} finished ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), "
        f"{counts['FAIL']} failed in all, {failed_now} in this sweep, {format_duration(elapsed)}"
    )
    if best:
        summary += f"; best trial {best['number']}: {cfg.study.metric}={best['value']:.4f}"
    obs.message(summary)
    return SweepResult(
        cfg.study_name, mask_url(cfg.storage or ""), counts, best, launched, failed_now, elapsed, stopped, exit_code
    )


def _ready(ref: Any, *, wait: bool) -> bool:
    """Whether the answer ``ref`` is there (``wait``: once it is)."""
    return bool(ray.wait([ref], num_returns=1, timeout=None if wait else 0)[0])


def _outcome(ref: Any, metric: str) -> Outcome:
    """How the trial task ``ref`` ended (it has ended)."""
    try:
        return outcomes.from_result(ray.get(ref), metric)
    except ray.exceptions.RayActorError as e:
        raise SweepError(f"the coordinator died: {outcomes.describe_error(e)}") from e
    except ray.exceptions.RayError as e:
        return outcomes.from_error(e)


def _better(value: float, best: dict[str, Any] | None, cfg: SweepConfig) -> bool:
    if best is None:
        return True
    return value > best["value"] if cfg.study.direction == "maximize" else value < best["value"]


def _call(ref: Any) -> Any:
    """``ray.get`` on a coordinator call; a dead coordinator ends the sweep with one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise SweepError(f"the coordinator died: {outcomes.describe_error(e)}") from e
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if cause is not None:
            raise cause from None
        raise


Callback = Callable[[SweepResult], None]
