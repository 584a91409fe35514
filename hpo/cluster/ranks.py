"""A data-parallel trial's ranks on Ray: one placement group per trial, reserved by the sweep loop (a bundle per
rank: its CPUs and, on GPUs, one GPU), rank 0 in the trial task itself (bundle 0) and the other ranks as actors
it starts in the other bundles. The training code is ``trials.train.fit`` with a ``trials.distributed.Group``.

Only rank 0 is the trial: it reports to the coordinator, answers the pruner for every rank (by broadcast),
writes the checkpoint and returns the summary. No rank outlives the trial: rank 0 kills its peers when it
ends (completed, pruned, paused or failed); a peer that fails has the others killed, so rank 0's next
collective call fails at once and the trial fails with that peer's error; the peers are actors owned by
rank 0's process, so they die with it when a sweep cancels the trial; and the loop removes the placement
group once the trial ended, which ends anything still in it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

if TYPE_CHECKING:
    from hpo.cluster.worker import TrialRun
    from trials.reporting import Reporter

_WATCH_SECONDS = 0.5


@dataclass(frozen=True)
class RankShape:
    """How many ranks a trial trains on, and what each rank gets from Ray."""

    ranks: int
    cpus: float
    gpus: float

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def reserve(shape: RankShape) -> PlacementGroup:
    """A placement group with a bundle per rank, packed on as few nodes as fit them (one, where one can)."""
    return placement_group([shape.bundle()] * shape.ranks, strategy="PACK")


def in_bundle(group: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)


def release(group: PlacementGroup | None) -> None:
    """Remove ``group`` (Ray ends every task and actor still in it); a group already gone is fine."""
    if group is not None:
        with contextlib.suppress(Exception):
            remove_placement_group(group)


class _Peer:
    """Rank 1..N-1 of a trial, as a Ray actor in its bundle of the trial's placement group."""

    def __init__(self) -> None:
        from hpo.cluster.worker import _hide_gpus_unless_given

        _hide_gpus_unless_given()

    def fit(self, config: dict[str, Any], checkpoint_dir: str, group: Any, num_threads: int | None) -> str:
        from trials.config import TrainConfig
        from trials.train import fit

        result = fit(
            TrainConfig.from_dict(config), None, checkpoint_dir, num_threads=num_threads, log=_quiet, group=group
        )
        return result.status


def _quiet(_: str) -> None:
    """The epoch lines of ranks other than 0 (rank 0's say the same)."""


def train_ranks(run: TrialRun, reporter: Reporter) -> dict[str, Any]:
    """Rank 0 of ``run`` (in this trial task) with its peers (started here): the summary of rank 0's ``fit``."""
    from hpo.cluster.worker import finished_summary
    from trials.config import TrainConfig
    from trials.distributed import Group
    from trials.train import fit

    shape, pg = run.ranks, run.placement_group
    if shape is None or pg is None:
        raise RuntimeError(f"trial {run.trial_id} has no ranks or no placement group")
    host = ray.util.get_node_ip_address()
    address = f"{host}:{_free_port(host)}"
    peer_class: Any = ray.remote(max_restarts=0, max_task_retries=0)(_Peer)
    peers = [
        peer_class.options(num_cpus=shape.cpus, num_gpus=shape.gpus, scheduling_strategy=in_bundle(pg, r)).remote()
        for r in range(1, shape.ranks)
    ]
    refs = [
        p.fit.remote(run.config, run.checkpoint_dir, Group(r, shape.ranks, address), run.num_threads)
        for r, p in enumerate(peers, start=1)
    ]
    watch = _Watch(peers, refs)
    try:
        try:
            result = fit(
                TrainConfig.from_dict(run.config),
                reporter,
                run.checkpoint_dir,
                num_threads=run.num_threads,
                group=Group(0, shape.ranks, address),
            )
            ray.get(refs)  # the peers end at the epoch rank 0 ends at
        except Exception:
            if watch.failure is not None:  # a peer failed first: its error is the trial's
                raise watch.failure from None
            raise
    finally:
        watch.stop()
        for p in peers:
            ray.kill(p)
    return finished_summary(result, run.checkpoint_dir)


class _Watch:
    """A thread that waits on the peers' ``fit`` calls: the first that fails has every peer killed (their
    connections close, so rank 0's collective call fails now rather than at the group's timeout) and is kept
    as ``failure``."""

    def __init__(self, peers: list[Any], refs: list[Any]) -> None:
        self.peers, self.pending = peers, list(refs)
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpo-rank-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.pending and not self._stop.is_set():
            done, self.pending = ray.wait(self.pending, num_returns=1, timeout=_WATCH_SECONDS)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as e:  # the peer's error (a RayTaskError's cause), or its death
                    self.failure = getattr(e, "cause", None) or e
                    for p in self.peers:
                        ray.kill(p)
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` now, for the ranks' rendezvous (rank 0 listens on it at once)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
