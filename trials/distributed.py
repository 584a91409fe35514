"""Data-parallel training of one run across ranks (``torch.distributed``): what ``fit`` needs when a ``Group``
is given, and nothing else. Who starts the ranks and where is not this module's business (a sweep's trial
places them with Ray: ``hpo.cluster.ranks``); it knows nothing of Ray or Optuna.

The semantics, chosen so that N ranks train what one process trains:

- ``batch_size`` is the **global** batch: each optimizer step sees ``batch_size`` samples in all, each rank
  ``batch_size / N`` of them (``batch_size`` must be a multiple of N). Every rank draws the one-process
  shuffle order from the same seeded generator and takes its slice of each global batch
  (``shard_batches``), so a step's averaged gradient is the one-process gradient of the very same batch: with
  no augmentation, dropout or BatchNorm in train mode the loss curve is the one-process curve up to
  floating-point rounding. A last, partial global batch is split as evenly as possible (its gradient then
  weighs the ranks' halves equally, not each sample) and dropped when it cannot give every rank 2 samples.
- Validation is sharded (rank r evaluates samples r, r+N, ...) and the sums are all-reduced, so
  ``val_acc``/``val_loss`` have the one-process definition; ``train_loss`` is the mean over all ranks' samples.
- Rank 0 is the run: it alone reports (``shared_answers``: it asks the reporter and broadcasts the answer, so
  every rank prunes, pauses or continues together) and writes checkpoints; every rank reads the checkpoint
  it resumes from (``agree`` refuses a rank that found another one).
- Backend: NCCL when the ranks train on CUDA (one GPU each), gloo on CPU. BatchNorm stays per rank (no
  SyncBatchNorm: it needs CUDA, and per-rank statistics are what the reference trainers use by default).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from trials.errors import TrainConfigError, TrialsError
from trials.reporting import CONTINUE, PAUSE, PRUNE, Reporter

#: The answers a reporter may give, as the small integers rank 0 broadcasts.
_ANSWERS = (CONTINUE, PRUNE, PAUSE)


class RankError(TrialsError):
    """The ranks of one run disagree (they would deadlock in their next collective call)."""


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run: rank ``rank`` of ``world``, meeting at rank 0's
    ``address`` (``host:port``, a TCP rendezvous). ``timeout_s`` bounds every collective call, so a rank
    whose peers died does not wait forever."""

    rank: int
    world: int
    address: str
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, world), got rank={self.rank} world={self.world}")

    @property
    def leader(self) -> bool:
        """Rank 0: the one that reports, checkpoints and answers the pruner."""
        return self.rank == 0


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def joined(group: Group, device: torch.device) -> Iterator[None]:
    """Join the process group of ``group`` for the body; always leave it (a reused worker process may join
    another run's group next, and a rank that failed closes its connections, so its peers fail fast)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        init_method=f"tcp://{group.address}",
        rank=group.rank,
        world_size=group.world,
        timeout=datetime.timedelta(seconds=group.timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_batch_size(batch_size: int, world: int) -> None:
    """``batch_size`` (the global batch) must split evenly over the ranks."""
    if batch_size % world:
        raise TrainConfigError(
            "batch_size", batch_size, f"is the global batch and must be a multiple of the {world} ranks of a trial"
        )


def shard_batches(order: Sequence[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Rank ``rank``'s batches of one epoch: the one-process batches of ``batch_size`` over ``order``, each
    cut into ``world`` contiguous slices (as even as possible), of which this rank takes slice ``rank``. A
    last batch too small to give every rank 2 samples is dropped on every rank (so all ranks take the same
    number of steps, and none trains BatchNorm on one sample). Pure: the same on every rank."""
    batches = []
    for start in range(0, len(order), batch_size):
        batch = list(order[start : start + batch_size])
        if len(batch) < 2 * world:
            continue  # only the last batch can be this short (batch_size >= 2 * world is checked)
        lo, hi = len(batch) * rank // world, len(batch) * (rank + 1) // world
        batches.append(batch[lo:hi])
    return batches


class ShardedBatches(Sampler[list[int]]):
    """A batch sampler: ``order`` (the one-process shuffle, e.g. a ``RandomSampler`` on the run's seeded
    generator) drawn in full at each epoch, then ``shard_batches``. Drawing the whole order consumes the
    generator exactly as one process's loader does, so the saved generator state resumes either."""

    def __init__(self, order: Sampler[int], n: int, batch_size: int, group: Group) -> None:
        check_batch_size(batch_size, group.world)
        if batch_size < 2 * group.world:
            raise TrainConfigError(
                "batch_size", batch_size, f"must give each of the {group.world} ranks at least 2 samples a step"
            )
        self.order, self.n, self.batch_size, self.group = order, n, batch_size, group

    def __iter__(self) -> Iterator[list[int]]:
        yield from shard_batches(list(self.order), self.batch_size, self.group.rank, self.group.world)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest >= 2 * self.group.world)


def val_indices(n: int, group: Group) -> list[int]:
    """The validation samples rank ``group.rank`` evaluates: every ``world``-th one from its rank on."""
    return list(range(group.rank, n, group.world))


def wrap(model: nn.Module, device: torch.device, *, unused_parameters: bool) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (its initial weights broadcast from rank 0). With
    ``unused_parameters`` (a backbone frozen for some epochs), DDP expects parameters without gradients."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused_parameters)


def _all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def reduce_train(trained: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """``train_one_epoch``'s result over every rank: ``train_loss`` the mean over all their samples."""
    n = trained["num_samples"]
    loss = trained["train_loss"] * n if n else 0.0
    total, seen = _all_sum([loss, n], device)
    return {**trained, "train_loss": total / seen if seen else float("nan"), "num_samples": seen}


def reduce_eval(metrics: Mapping[str, float], seen: int, device: torch.device) -> dict[str, float]:
    """``evaluate``'s ``val_acc``/``val_loss`` of this rank's ``seen`` samples, over every rank's."""
    correct = round(metrics["val_acc"] * seen) if seen else 0
    loss = metrics["val_loss"] * seen if seen else 0.0
    c, total, n = _all_sum([correct, loss, seen], device)
    if not n:
        return {"val_acc": float("nan"), "val_loss": float("nan")}
    return {"val_acc": c / n, "val_loss": total / n}


def shared_answers(reporter: Reporter | None, group: Group, device: torch.device) -> Reporter:
    """A reporter for every rank: rank 0 asks ``reporter`` (None: always continue) and broadcasts its answer;
    the other ranks get that answer. An answer outside the protocol is broadcast as such and raised on
    every rank (by ``fit``'s check), rather than leaving the other ranks waiting."""

    def ask(epoch: int, metrics: Mapping[str, float]) -> str:
        code = torch.zeros(1, dtype=torch.int64, device=device)
        answer = CONTINUE
        if group.leader:
            answer = reporter(epoch, metrics) if reporter is not None else CONTINUE
            code[0] = _ANSWERS.index(answer) if answer in _ANSWERS else -1
        dist.broadcast(code, src=0)
        if group.leader:
            return answer
        i = int(code.item())
        return _ANSWERS[i] if i >= 0 else f"<rank 0's reporter gave an unknown answer at epoch {epoch}>"

    return ask


def agree(value: int, what: str, group: Group, device: torch.device) -> None:
    """Raise ``RankError`` on every rank unless all ranks hold the same ``value`` (e.g. the epochs restored
    from a checkpoint: a rank that cannot read the folder rank 0 wrote would train other epochs)."""
    t = torch.tensor([value], dtype=torch.int64, device=device)
    got = [torch.zeros_like(t) for _ in range(group.world)]
    dist.all_gather(got, t)
    values = [int(g.item()) for g in got]
    if len(set(values)) > 1:
        raise RankError(
            f"the {group.world} ranks disagree on {what}: {values} (by rank); every rank must reach the same "
            "checkpoint folder (one node, or an output_dir that every node shares)"
        )
