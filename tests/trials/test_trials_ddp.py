"""Data-parallel ``fit`` on CPU with the gloo backend (``trials.distributed``): 2 ranks train what one process
trains with the same global batch; pure tables for how batches are cut over ranks."""

from __future__ import annotations

import multiprocessing
import socket
from pathlib import Path
from typing import Any

import pytest

from trials import distributed
from trials.config import TrainConfig
from trials.errors import TrainConfigError
from trials.reporting import CONTINUE, PRUNE
from trials.train import fit

REPO = Path(__file__).resolve().parents[2]
#: The 2-rank curve equals the one-process curve up to float rounding (the same batches, the gradients
#: averaged in another order): measured ~1e-7 here; the tolerance leaves room for other CPUs' kernels.
TOLERANCE = 1e-4


@pytest.mark.parametrize(
    ("n", "batch", "rank", "world", "expected"),
    [
        (8, 4, 0, 2, [[0, 1], [4, 5]]),
        (8, 4, 1, 2, [[2, 3], [6, 7]]),
        (10, 4, 1, 2, [[2, 3], [6, 7]]),  # a last batch of 2 cannot give 2 ranks 2 samples: dropped by both
        (11, 6, 0, 2, [[0, 1, 2], [6, 7]]),  # a last batch of 5 is split 2 + 3 (as even as possible)
        (11, 6, 1, 2, [[3, 4, 5], [8, 9, 10]]),
        (6, 6, 2, 3, [[4, 5]]),
        (5, 8, 0, 1, [[0, 1, 2, 3, 4]]),
    ],
)
def test_each_rank_takes_its_slice_of_every_global_batch(
    n: int, batch: int, rank: int, world: int, expected: list[list[int]]
) -> None:
    assert distributed.shard_batches(list(range(n)), batch, rank, world) == expected


def test_val_samples_are_dealt_round_robin() -> None:
    group = distributed.Group(1, 3, "127.0.0.1:1")
    assert distributed.val_indices(8, group) == [1, 4, 7]


@pytest.mark.parametrize(("batch", "message"), [(5, "must be a multiple of the 2 ranks"), (2, "at least 2 samples")])
def test_a_global_batch_the_ranks_cannot_share_is_refused(batch: int, message: str) -> None:
    order: Any = range(8)
    with pytest.raises(TrainConfigError, match=message):
        distributed.ShardedBatches(order, 8, batch, distributed.Group(0, 2, "127.0.0.1:1"))


def _config(**changes: Any) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": "tests.usermodels:tiny_net",  # no BatchNorm: per-rank statistics would differ
            "weights": None,
            "dataset": {"type": "digits", "classes": [0, 1, 2], "max_train_samples": 64, "max_val_samples": 30},
            "image_size": 16,
            "epochs": 3,
            "lr": 0.01,
            "batch_size": 16,
            "dropout": 0.0,
            "aug_strength": 0.0,
            "num_workers": 0,
            "early_stopping": {"patience": None},
            **changes,
        }
    )


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _rank(
    config: dict[str, Any], rank: int, world: int, address: str, ckpt: str | None, prune_at: int, out: Any
) -> None:
    import sys

    sys.path.insert(0, str(REPO))  # the spawned process imports the model function from tests.usermodels

    def reporter(epoch: int, metrics: Any) -> str:
        return PRUNE if epoch == prune_at else CONTINUE

    group = distributed.Group(rank, world, address, timeout_s=120)
    result = fit(TrainConfig.from_dict(config), reporter, ckpt, num_threads=1, log=lambda _: None, group=group)
    out.put((rank, result.status, result.history))


def _ranks(config: TrainConfig, world: int, ckpt: str | None = None, prune_at: int = 0) -> dict[int, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    address = _free_address()
    procs = [
        ctx.Process(target=_rank, args=(config.to_dict(), r, world, address, ckpt, prune_at, out)) for r in range(world)
    ]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, status, history = out.get(timeout=300)
        results[rank] = (status, history)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return results


def test_two_ranks_train_the_one_process_curve() -> None:
    config = _config()
    one = fit(config, num_threads=1, log=lambda _: None)
    ranks = _ranks(config, 2)
    assert ranks[0][0] == ranks[1][0] == "completed"
    assert ranks[0][1] == ranks[1][1]  # every rank saw the same all-reduced metrics
    two = ranks[0][1]
    assert len(two) == len(one.history) == 3
    for a, b in zip(one.history, two, strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert b[key] == pytest.approx(a[key], abs=TOLERANCE), (key, a, b)
    assert one.history[-1]["train_loss"] < one.history[0]["train_loss"]  # it learned: the curve is a curve


def test_rank_0_prunes_every_rank_and_alone_writes_the_checkpoint(tmp_path: Path) -> None:
    ranks = _ranks(_config(checkpoint_every_s=0), 2, ckpt=str(tmp_path), prune_at=2)
    assert [ranks[r][0] for r in (0, 1)] == ["pruned", "pruned"]
    assert len(ranks[1][1]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
