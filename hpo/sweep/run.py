"""``run_sweep``: validate, join or start Ray, size the sweep to it, start the coordinator, prepare the
study, run the loop, and report. Everything that can refuse the sweep (the config, the data, the cluster's
resources, another sweep holding the study) does so before a trial is written."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray

from hpo.cluster.ranks import RankShape
from hpo.cluster.session import RayInfo, fit_parallel, ray_session, refuse_sqlite_on_remote
from hpo.cluster.worker import Workload, train_workload, warm_workers
from hpo.config import SweepConfig, load_train_file
from hpo.coordinator import actor
from hpo.coordinator.settings import CoordinatorSettings
from hpo.errors import ConfigError, StudyBusyError
from hpo.progress import Clock, LineObserver, Observer, format_duration
from hpo.ranking import Best
from hpo.sweep import lease
from hpo.sweep.ledger import Ledger, StopReason
from hpo.sweep.loop import SweepLoop, call
from hpo.sweep.prepare import Prepared, prepare_study, refuse_if_busy, refuse_if_changed, release_lease
from hpo.sweep.stop import Stopper, install_sigint, install_sigterm
from storage import mask_url
from trials.errors import TrialsError


@dataclass
class SweepResult:
    study: str
    storage: str  # password masked
    counts: dict[str, int]
    best: dict[str, Any] | None
    launched: int
    failed_now: int
    elapsed_s: float
    stopped: StopReason

    @property
    def exit_code(self) -> int:
        return self.stopped.exit_code


def preflight(cfg: SweepConfig) -> None:
    """Cheap checks of the data, model and weights before anything is written (no training)."""
    from trials.preflight import check, check_models, field_message

    try:
        check(cfg.base_train)
    except TrialsError as e:
        raise ConfigError(field_message(e)) from None
    for param in cfg.space.params:
        if param.name == "model":  # searched (or fixed in search_space): every choice must build
            try:
                check_models(cfg.base_train, param.candidates())
            except TrialsError as e:
                raise ConfigError(f"search_space.model: {field_message(e)}") from None


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
    allow_changes: bool = False,
) -> SweepResult:
    """Run (or continue) the sweep ``cfg`` until its study has ``n_trials`` finished trials.

    ``workload`` is what each trial runs on a worker (default: ``trials.train.fit``); it must be importable
    there. Raises ``ConfigError``/``StorageError``/``ClusterError``/``StudyBusyError`` before touching the
    study when the input is bad; returns a ``SweepResult`` whose ``exit_code`` is 1 when the failure budget
    was spent, a failure no hyperparameters could fix stopped it, or trial after trial ran out of GPU memory;
    3 when ``study.timeout`` ended it short of its target; 130 when the user interrupted (Ctrl-C), and 143 on
    SIGTERM (``handle_sigint``: this process's SIGINT and SIGTERM go to ``stopper``). A study whose recorded
    config differs from ``cfg`` (``hpo.fingerprint``) is refused with ``ConfigError`` unless ``allow_changes``.
    """
    obs = observer or LineObserver(metric=cfg.study.metric)
    stopper = stopper or Stopper()
    ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
    refuse_sqlite_on_remote(cfg.storage or "", ray_address)  # before anything is written or started
    if check_data:
        preflight(cfg)
    if enqueue:
        load_train_file(enqueue)  # validate before the study is touched
    refuse_if_busy(cfg)  # in a second, not after a Ray start; the lease itself is taken atomically below
    fp = refuse_if_changed(cfg, allow_changes=allow_changes)  # likewise; checked again under the lease
    mine = lease.new_lease(ttl=lease.ttl_for(cfg.storage_options.retry_timeout))  # outlives any retried write
    clock = Clock()
    with contextlib.ExitStack() as stack:
        info = stack.enter_context(ray_session(ray_address))
        if handle_sigint:  # after ray.init: it replaces the SIGTERM handler of Ray's core worker (an abort trace)
            _restore_on_exit(stack, signal.SIGTERM, install_sigterm(stopper))
        placement = place(cfg, info)  # a sweep the cluster cannot run is refused before the study exists
        if placement.ranks > 1 and workload is not train_workload:
            raise ConfigError(
                f"resources.ranks_per_trial: {placement.ranks} ranks train only the default workload (trials.train)"
            )
        settings = CoordinatorSettings.from_config(cfg, parallel=placement.parallel, lease=mine)
        # the coordinator's process (and the first trials' workers) start while the study is prepared
        handle = stack.enter_context(_coordinator(settings, placement, workload))
        prepared = prepare_study(cfg, mine=mine, enqueue=enqueue, allow_changes=allow_changes, fingerprint=fp)
        stack.callback(_release, handle, cfg, mine)
        _say_prepared(obs, cfg, prepared)
        ledger = Ledger(
            target=cfg.study.n_trials,
            max_failures=cfg.max_failures,
            direction=str(cfg.direction),
            counts=prepared.counts,
            best=prepared.best,
            paused=prepared.paused,
        )
        if prepared.finished >= ledger.target:
            ledger.stop = StopReason.NOTHING_TO_DO
            obs.message(
                f"nothing to do: the study already has {prepared.finished} finished trials (n_trials={ledger.target})"
            )
            return _result(cfg, ledger, clock)
        obs.message(f"running {placement.describe()}, on {info.describe()}")
        handle.connecting = True
        if not call(handle.actor.connect.remote()):  # it renews the lease: False when another sweep took it
            raise StudyBusyError(f"study {cfg.study_name!r} was taken over by another hpo sweep as this one started")
        previous = install_sigint(stopper) if handle_sigint else None
        if previous is not None:
            stack.callback(signal.signal, signal.SIGINT, previous)
        loop = SweepLoop(
            cfg, handle.actor, placement=placement, workload=workload, observer=obs, stopper=stopper, ledger=ledger
        )
        loop.run(prepared.orphans)
        stopper.announce(obs, cfg.drain_timeout)
        result = _result(cfg, ledger, clock)
        obs.message(_summary(cfg, result, ledger))
        return result
    raise AssertionError("unreachable")


def _restore_on_exit(stack: contextlib.ExitStack, signum: int, previous: Any) -> None:
    """Put the handler ``previous`` back for ``signum`` when ``stack`` closes (None: nothing was installed)."""
    if previous is not None:
        stack.callback(signal.signal, signum, previous)


def place(cfg: SweepConfig, info: RayInfo) -> Placement:
    """What each trial gets and how many run at once: ``gpus_per_trial: auto`` is one GPU per trial on a cluster
    with GPUs and none on one without (a data-parallel trial: one per rank); ``parallel`` is the config's, or what
    the cluster's resources fit. A trial that needs more than the cluster has, or ``train.device: cuda`` with no
    GPU, is a ``ConfigError``."""
    res = cfg.resources
    ranks = res.ranks
    gpus = (float(ranks) if info.gpus >= 1 else 0.0) if res.gpus_per_trial == "auto" else float(res.gpus_per_trial)
    if gpus > 0 and info.gpus < gpus:
        raise ConfigError(f"resources.gpus_per_trial: the Ray cluster has {info.gpus:g} GPUs, got {gpus:g}")
    cpus, why = (float(res.cpus_per_trial), "") if res.cpus_per_trial != "auto" else auto_cpus(info, gpus, ranks)
    if info.cpus < cpus:
        raise ConfigError(f"resources.cpus_per_trial: the Ray cluster has {info.cpus:g} CPUs, got {cpus:g}")
    if gpus == 0 and cfg.base_train.device == "cuda":
        raise ConfigError(
            f"train.device: 'cuda', but a trial gets no GPU (resources.gpus_per_trial: {res.gpus_per_trial}; "
            f"the Ray cluster has {info.gpus:g} GPUs); use device: auto or cpu, or give trials GPUs"
        )
    parallel = cfg.parallel or fit_parallel(info, cpus, gpus)
    return Placement(cpus=cpus, gpus=gpus, parallel=parallel, cpus_chosen=why, ranks=ranks)


def auto_cpus(info: RayInfo, gpus: float, ranks: int = 1) -> tuple[float, str]:
    """``cpus_per_trial: auto`` for a trial with ``gpus`` GPUs: a GPU node's CPUs per GPU times ``gpus`` (floor,
    at least 1), so the GPU trials that fill a node share its CPUs; 1 without a GPU (1 per rank of a
    data-parallel trial). With how it was chosen."""
    ratio = info.cpus_per_gpu()
    if gpus <= 0 or ratio is None:
        if ranks > 1:
            return float(ranks), f"cpus_per_trial auto -> {ranks}: 1 per rank"
        return 1.0, ""  # as before auto: "1 CPU each, no GPU" says it
    per_gpu, node_cpus, node_gpus = ratio
    cpus = float(max(1, math.floor(per_gpu * gpus + 1e-9)))
    return cpus, f"cpus_per_trial auto -> {cpus:g}: {node_cpus:g} CPUs / {node_gpus:g} GPUs"


@dataclass(frozen=True)
class Placement:
    """Resources of one trial, and how many trials run at once."""

    cpus: float
    gpus: float
    parallel: int
    cpus_chosen: str = ""  # how ``cpus_per_trial: auto`` chose ``cpus`` ("": the config gave them)
    ranks: int = 1  # processes per trial (data-parallel when > 1); ``cpus`` and ``gpus`` are split among them

    @property
    def rank_cpus(self) -> float:
        return self.cpus / self.ranks

    @property
    def rank_gpus(self) -> float:
        return self.gpus / self.ranks

    def rank_shape(self) -> RankShape | None:
        """What each rank of a data-parallel trial gets; None for a one-process trial."""
        return RankShape(self.ranks, self.rank_cpus, self.rank_gpus) if self.ranks > 1 else None

    def describe(self) -> str:
        each = f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}"
        each += f" and {self.gpus:g} GPU{'s' if self.gpus > 1 else ''} each" if self.gpus else " each, no GPU"
        if self.ranks > 1:
            each += f", in {self.ranks} data-parallel ranks ({'nccl' if self.gpus else 'gloo'})"
        why = f" ({self.cpus_chosen})" if self.cpus_chosen else ""
        return f"{self.parallel} trial{'s' if self.parallel != 1 else ''} at once, {each}{why}"


@dataclass
class _Handle:
    actor: Any
    connecting: bool = False  # set before ``connect`` is called: from then on it may hold a storage


@contextlib.contextmanager
def _coordinator(settings: CoordinatorSettings, placement: Placement, workload: Workload) -> Iterator[_Handle]:
    """The coordinator actor, started unconnected, with a trial worker per slot warming up beside it; killed on
    the way out (``_release`` closes it first once the study is prepared)."""
    handle = _Handle(actor.start(settings))
    warm_workers(placement.rank_cpus, placement.rank_gpus, workload, placement.parallel)
    try:
        yield handle
    finally:
        ray.kill(handle.actor)


def _release(handle: _Handle, cfg: SweepConfig, mine: lease.Lease) -> None:
    """Close the coordinator (it runs the calls queued before, then gives the study's lease up); when it was
    never connected, or could not give the lease up, the driver releases it."""
    released = False
    if handle.connecting:  # one never connected holds no storage
        with contextlib.suppress(ray.exceptions.RayError):
            released = bool(ray.get(handle.actor.close.remote(), timeout=30))
    if not released:
        release_lease(cfg.storage or "", cfg.study_name, mine["owner"])


def _say_prepared(obs: Observer, cfg: SweepConfig, prepared: Prepared) -> None:
    target = cfg.study.n_trials
    obs.message(
        f"study {cfg.study_name!r} on {mask_url(cfg.storage or '')}: {prepared.finished}/{target} trials finished"
    )
    if prepared.reaped:
        obs.message(f"marked {len(prepared.reaped)} trial(s) left RUNNING by a lost driver as FAIL: {prepared.reaped}")


def _result(cfg: SweepConfig, ledger: Ledger, clock: Clock) -> SweepResult:
    best: Best | None = ledger.best
    return SweepResult(
        cfg.study_name,
        mask_url(cfg.storage or ""),
        dict(ledger.counts),
        best.as_dict() if best else None,
        ledger.launched,
        ledger.failed_now,
        clock.elapsed(),
        ledger.final_reason(),
    )


def _summary(cfg: SweepConfig, result: SweepResult, ledger: Ledger) -> str:
    c = result.counts
    text = (
        f"{result.stopped.value}: {ledger.finished()}/{ledger.target} finished ({c['COMPLETE']} complete, "
        f"{c['PRUNED']} pruned), {c['FAIL']} failed in all, {result.failed_now} in this sweep, "
        f"{format_duration(result.elapsed_s)}"
    )
    if result.best:
        text += f"; best trial {result.best['number']}: {cfg.study.metric}={result.best['value']:.4f}"
    return text
