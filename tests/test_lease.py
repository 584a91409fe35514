"""Issue 18, section 2: the study's lease (bug 2), lock waits with a deadline (bug 6), MySQL refused (bug 8),
and the smaller races of acquire and close (bug 9). Real PostgreSQL and SQLite, real coordinators, and one
real ``hpo sweep`` taken over through the CLI."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy

from hpo.config import load_sweep_config
from hpo.coordinator.coordinator import Coordinator
from hpo.coordinator.messages import FailureKind, Outcome
from hpo.coordinator.settings import CoordinatorSettings
from hpo.errors import LeaseLostError, SweepError
from hpo.sweep import lease
from hpo.sweep.lease import Host
from hpo.sweep.prepare import release_lease
from storage import StorageError, close_storage, open_storage, parse_url
from storage.locks import LEASE_LOCK_BASE, LockTimeout, exclusive
from tests.conftest import run_cli
from tests.fixtures_files import coordinator_settings, start_cli_sweep, tiny_sweep, wait_for_reports
from tests.pgcluster import PrivateCluster

optuna.logging.set_verbosity(optuna.logging.WARNING)

HERE = Host("node-a", "boot-1", "pid:[4026531836]")
ALIVE, GONE = 100, 200
NOW = 1_000_000.0


def _lease(**fields: Any) -> dict[str, Any]:
    base = {"owner": "x", "host": "node-a", "boot_id": "boot-1", "pid_ns": "pid:[4026531836]", "pid": ALIVE}
    return {**base, "pid_start": 5.0, "heartbeat": NOW - 1, "ttl": 30.0, **fields}


@pytest.mark.parametrize(
    ("held", "here", "live"),
    [
        (None, HERE, False),
        ({}, HERE, False),
        (_lease(), HERE, True),
        (_lease(heartbeat=NOW - 31), HERE, False),  # older than its TTL by the database's clock
        (_lease(heartbeat=NOW - 60, ttl=90.0), HERE, True),  # the holder's TTL (retry_timeout + 30 s), not 30 s
        (_lease(heartbeat=NOW - 91, ttl=90.0), HERE, False),
        (_lease(heartbeat=NOW - 20, ttl="nonsense"), HERE, True),  # a TTL it cannot read: 30 s
        (_lease(heartbeat=NOW - 31, ttl=-1), HERE, False),
        (_lease(pid=GONE), HERE, False),  # same host, boot and PID namespace, process gone: dead at once
        # same host name, another PID namespace (containers with --network host, pods with hostNetwork): its
        # pid names nothing here, so only its heartbeat counts
        (_lease(pid=GONE, pid_ns="pid:[4026532999]"), HERE, True),
        (_lease(pid=GONE, boot_id="boot-2"), HERE, True),  # another boot (or another machine's namesake)
        (_lease(pid=GONE, host="node-b"), HERE, True),
        (_lease(pid=GONE, boot_id=None, pid_ns=None), HERE, True),  # a lease that recorded neither
        (_lease(pid=GONE), Host("node-a"), True),  # no /proc here: no shortcut
        (_lease(pid=GONE, pid_start=None), HERE, True),
        (_lease(pid=GONE, heartbeat=NOW - 31), HERE, False),
    ],
)
def test_is_live(held: dict[str, Any] | None, here: Host, live: bool) -> None:
    assert lease.is_live(held, now=NOW, host=here, running=lambda pid, start: pid == ALIVE) is live


@pytest.mark.parametrize(("retry_timeout", "ttl"), [(0, 30.0), (5, 35.0), (60, 90.0), (600, 630.0)])
def test_the_ttl_outlives_the_longest_retry(retry_timeout: float, ttl: float) -> None:
    assert lease.ttl_for(retry_timeout) == ttl


def test_a_new_lease_records_where_its_pid_means_something() -> None:
    mine = lease.new_lease("me", ttl=90)
    assert mine["ttl"] == 90 and mine["pid"] == os.getpid()
    assert mine["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert mine["pid_ns"] == os.readlink("/proc/self/ns/pid")
    assert lease.shares_pids(mine, lease.here())


# ---------------------------------------------------------------------------------------- locks (bug 6)
@contextlib.contextmanager
def _advisory_lock_held(url: str, key: int) -> Iterator[None]:
    """The lock held by another connection (as by a stopped process) while the block runs."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            yield
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_held_advisory_lock_times_out_with_one_line_naming_it(pg_url: str) -> None:
    key = LEASE_LOCK_BASE + 7
    with _advisory_lock_held(pg_url, key), pytest.raises(LockTimeout) as info, exclusive(pg_url, key, timeout=0.5):
        pass
    assert isinstance(info.value, StorageError)
    assert "lease lock of study id 7" in str(info.value) and "\n" not in str(info.value)
    with exclusive(pg_url, key, timeout=5) as conn:  # free again
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1


def test_a_held_file_lock_times_out(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockTimeout, match="file lock on"), exclusive(f"sqlite:///{tmp_path}/x.db", 1, timeout=0.3):
            pass
    finally:
        os.close(fd)
    with exclusive(f"sqlite:///{tmp_path}/x.db", 1, timeout=5):
        pass


# ------------------------------------------------------------------------------------------- the study
def _settings(url: str, name: str, mine: dict[str, Any] | None, root: Path) -> CoordinatorSettings:
    return coordinator_settings(url, name, root, base_config={"lr": 0.01, "epochs": 5}, lease=mine)


@pytest.fixture
def study(pg_url: str) -> Iterator[tuple[Any, int]]:
    storage = open_storage(pg_url)
    created = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    try:
        yield storage, created._study_id
    finally:
        close_storage(storage)


def _snapshot(url: str, name: str) -> list[tuple[Any, ...]]:
    """Everything written of the study's trials."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    return [
        (t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs, t.system_attrs) for t in trials
    ]


@pytest.mark.postgres
def test_acquire_reports_the_lease_taken_only_when_it_wrote_it(
    pg_url: str, study: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug 9: the holder was judged twice (inside the lock, refused; then after it, dead): acquire said "taken"
    without having written the lease. The holder here is a process on this machine that dies in between."""
    storage, study_id = study
    lease.write(storage, study_id, lease.new_lease("other"))
    answers = iter([True, False, False, False])
    monkeypatch.setattr(lease, "is_running", lambda pid, start=None: next(answers))
    got = lease.acquire(pg_url, storage, study_id, lease.new_lease("mine"))
    owner = lease.read(storage, study_id)["owner"]  # type: ignore[index]
    assert (got is None) == (owner == "mine"), (got, owner)


@pytest.mark.postgres
def test_close_after_a_failed_load_leaves_the_release_to_the_driver(pg_url: str, study: tuple[Any, int]) -> None:
    """Bug 9: ``close()`` said True (released) when ``load_study`` had failed, so nobody released the lease."""
    storage, study_id = study
    mine = lease.new_lease("mine")
    assert lease.acquire(pg_url, storage, study_id, mine) is None
    coord = Coordinator(_settings(pg_url, "no-such-study", mine, Path("/tmp/unused")), connect=False)
    with pytest.raises(KeyError):
        coord.connect()
    assert coord.close() is False
    release_lease(pg_url, "s", "mine")  # what the driver does then
    assert lease.read(storage, study_id) is None


@pytest.mark.postgres
def test_a_stale_heartbeat_is_taken_over_and_the_live_holder_stops_writing(
    pg_url: str, study: tuple[Any, int], tmp_path: Path
) -> None:
    """Bug 2: a live holder whose heartbeat is stale in the database loses the study to another sweep; from
    then on it refuses every write (reports answer prune), so nothing of it lands after the takeover."""
    storage, study_id = study
    mine = lease.new_lease("holder", ttl=lease.ttl_for(60))
    assert lease.acquire(pg_url, storage, study_id, mine) is None
    coord = Coordinator(_settings(pg_url, "s", mine, tmp_path), connect=False)
    assert coord.connect() is True
    asked = coord.ask()
    assert coord.started(asked.trial_id, {"host": "here"}) is True
    assert coord.report(asked.trial_id, 1, {"val_acc": 0.5}) == "continue"
    assert coord.heartbeat() is True

    held = lease.read(storage, study_id)
    assert held is not None and held["ttl"] == 90
    lease.write(storage, study_id, {**held, "heartbeat": held["heartbeat"] - 3600})  # stale, holder alive
    assert lease.acquire(pg_url, storage, study_id, lease.new_lease("taker")) is None
    taken = _snapshot(pg_url, "s")

    assert coord.report(asked.trial_id, 2, {"val_acc": 0.6}) == "prune"
    assert coord.started(asked.trial_id, {"host": "here"}) is False
    for write in (
        lambda: coord.tell(asked.trial_id, Outcome("COMPLETE", 0.6)),
        lambda: coord.fail_and_retry(asked.trial_id, Outcome.fail(FailureKind.TRIAL, "diverged")),
        lambda: coord.reap([asked.trial_id], "driver lost", 1, 1),
        coord.ask,
        coord.heartbeat,
    ):
        with pytest.raises(LeaseLostError, match="study 's'") as info:
            write()
        assert isinstance(info.value, SweepError) and "\n" not in str(info.value)
    assert _snapshot(pg_url, "s") == taken
    assert coord.close() is True  # no longer ours: nothing to give up
    assert lease.read(storage, study_id)["owner"] == "taker"  # type: ignore[index]


@pytest.mark.postgres
def test_a_holder_that_cannot_renew_stops_before_its_lease_may_be_taken(pg_url: str, study: tuple[Any, int]) -> None:
    """Renewals held off (here: none after the first) fence the holder by its own clock, a margin before the
    TTL after which another sweep may take the study over."""
    storage, study_id = study
    mine = lease.new_lease("holder", ttl=1.5)
    assert lease.acquire(pg_url, storage, study_id, mine) is None
    keeper = lease.Keeper(pg_url, study_id, mine, "s", interval=3600)
    assert keeper.start() is True
    deadline = time.monotonic() + 60
    while keeper.lost() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "could not renew the lease on study 's'" in (keeper.lost() or "")
    with pytest.raises(LeaseLostError):
        keeper.check()
    held = lease.read(storage, study_id)
    assert held is not None and held["owner"] == "holder"  # nobody took it; the holder stopped on its own
    keeper.stop()


@pytest.mark.postgres
def test_reports_do_not_wait_for_a_held_lease_lock(pg_url: str, study: tuple[Any, int], tmp_path: Path) -> None:
    """Bug 6: the heartbeat took the lease lock with no deadline inside the coordinator, so a stopped holder of
    the lock froze every report behind it. Renewal and fencing take no lock now."""
    storage, study_id = study
    mine = lease.new_lease("holder")
    assert lease.acquire(pg_url, storage, study_id, mine) is None
    coord = Coordinator(_settings(pg_url, "s", mine, tmp_path), connect=False)
    assert coord.connect() is True
    asked = coord.ask()
    keeper = coord._keeper
    assert keeper is not None
    with _advisory_lock_held(pg_url, LEASE_LOCK_BASE + study_id):
        keeper.renew()  # the keeper's renewal, as its thread makes it
        assert coord.heartbeat() is True
        assert coord.report(asked.trial_id, 1, {"val_acc": 0.5}) == "continue"
        assert coord.tell(asked.trial_id, Outcome("COMPLETE", 0.5)).state == "COMPLETE"
    coord.close()


# ----------------------------------------------------------------------------------------- MySQL (bug 8)
def test_mysql_is_refused_with_one_masked_line(tmp_path: Path) -> None:
    """Bug 8: a MySQL URL was accepted, and the lock that makes the lease atomic was a no-op there."""
    url = "mysql+pymysql://root:s3cret@127.0.0.1/hpo"
    with pytest.raises(StorageError) as info:
        parse_url(url)
    message = str(info.value)
    assert "mysql+pymysql is not supported" in message and "s3cret" not in message and "\n" not in message
    cfg = tmp_path / "m.yaml"
    cfg.write_text(tiny_sweep("m"))
    with pytest.raises(StorageError, match="not supported"):
        load_sweep_config(cfg, storage=url)


@pytest.mark.slow
def test_the_cli_refuses_mysql_before_anything_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_text(tiny_sweep("m"))
    r = run_cli("sweep", str(cfg), "--storage", "mysql://root:s3cret@localhost/hpo", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "mysql is not supported" in r.stderr and "s3cret" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# --------------------------------------------------------------------------- the takeover, end to end
TAKE = """
import sys
from hpo.sweep import lease
from storage import opened
url, name = sys.argv[1], sys.argv[2]
with opened(url) as storage:
    got = lease.acquire(url, storage, storage.get_study_id_from_name(name), lease.new_lease("taker"))
print("taken" if got is None else f"refused: {got}")
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_a_cli_sweep_whose_lease_is_taken_over_stops_writing_and_exits_1(pg_url: str, tmp_path: Path) -> None:
    """Bug 2, end to end: a running ``hpo sweep``'s lease is made stale in the database (its process alive)
    and taken by another process. The sweep writes nothing after the takeover and exits 1 with one line."""
    cfg = tmp_path / "held.yaml"
    cfg.write_text(
        tiny_sweep("held").replace("n_trials: 2", "n_trials: 40").replace("epochs: 1", "epochs: 4")
        + f"parallel: 1\noutput_dir: {tmp_path / 'runs'}\n"
    )
    holder = start_cli_sweep(cfg, pg_url, tmp_path, "lease")
    try:
        wait_for_reports(pg_url, "held", holder, timeout=420)
        storage = open_storage(pg_url, create_schema=False)
        try:
            study_id = storage.get_study_id_from_name("held")
            held = lease.read(storage, study_id)
            assert held is not None and held["pid"] == holder.pid
            lease.write(storage, study_id, {**held, "heartbeat": held["heartbeat"] - 3600})
            take = subprocess.run(
                [sys.executable, "-c", TAKE, pg_url, "held"], capture_output=True, text=True, timeout=120
            )
            assert take.stdout.strip() == "taken", take.stdout + take.stderr
            taken = _snapshot(pg_url, "held")
            out, err = holder.communicate(timeout=300)
            assert holder.returncode == 1, out + err
            errors = [line for line in err.splitlines() if line.strip()]
            assert len(errors) == 1 and "study 'held'" in errors[0] and "stopping" in errors[0], err
            assert "Traceback" not in out + err
            assert _snapshot(pg_url, "held") == taken  # nothing of the holder's landed after the takeover
            assert lease.read(storage, study_id)["owner"] == "taker"  # type: ignore[index]
        finally:
            close_storage(storage)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()


def test_a_keeper_that_cannot_reach_the_database_says_the_storage_is_lost(private_pg: PrivateCluster) -> None:
    """Renewals that fail because the server is gone name the cause (the storage), not only the lease."""
    url = private_pg.url("hpo")
    storage = open_storage(url)
    try:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "gone")
        mine = lease.new_lease("holder", ttl=3)
        assert lease.acquire(url, storage, study_id, mine) is None
    finally:
        close_storage(storage)
    keeper = lease.Keeper(url, study_id, mine, "gone", interval=0.2)
    assert keeper.start() is True
    private_pg.stop("fast")
    deadline = time.monotonic() + 60
    while keeper.lost() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    keeper.stop()
    why = keeper.lost() or ""
    assert why.startswith("lost the storage (") and "could not renew the lease on study 'gone'" in why, why
