"""One driver per study: a lease in the study's system attrs, taken atomically, renewed, and fenced.

A second ``hpo sweep`` on a study whose lease is live refuses with a message naming the holder, so two
drivers never reap each other's trials or overshoot ``n_trials``. A lease is dead when its heartbeat is
older than its TTL by the database's clock, or at once when it was taken on this machine, in this PID
namespace, by a process that no longer exists (so re-running right after a crash needs no wait).

- Times are the database's (PostgreSQL's ``clock_timestamp()``; SQLite's file is on this machine, so its
  clock is the local one): hosts whose clocks disagree judge a heartbeat's age alike.
- The TTL is the holder's, recorded in the lease: its ``storage_options.retry_timeout`` plus 30 s
  (``ttl_for``), so a database outage that the holder's writes live through never costs it the lease.
- Taking and releasing are a read, a decision and a write under a database-wide lock with a deadline
  (``storage.locks``), on the lock's own connection. Renewing is one compare-and-swap statement: the
  record is rewritten only if it is still exactly what this holder wrote last (``Keeper``), so a lease that
  was taken over, released or rewritten by anyone else is never renewed again.
- A ``Keeper`` renews from a thread of its own, on a connection of its own, so renewals never queue behind
  the coordinator's retried writes. Its holder is fenced (``LeaseLostError`` on every write) once a renewal
  finds the record changed, or once its last renewal is older than the TTL less ``MARGIN`` by its own
  monotonic clock: it stops before any other sweep may take the study over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hpo.errors import LeaseLostError, StudyBusyError
from hpo.procs import is_running, start_time
from storage.locks import LEASE_LOCK_BASE, exclusive
from storage.url import parse_url, redact

log = logging.getLogger("hpo.lease")

KEY = "hpo:driver"
TTL = 30.0  # the shortest TTL, and the TTL of a lease that records none
TTL_BEYOND_RETRY = 30.0  # a lease's TTL: storage_options.retry_timeout plus this
HEARTBEAT = 5.0  # how often a running sweep renews its lease
MARGIN = 10.0  # a holder stops writing this long before its lease may be taken (at most a third of the TTL)
LOCK_TIMEOUT = 20.0  # seconds to wait for the lease lock before giving up with one line

Lease = dict[str, Any]


@dataclass(frozen=True)
class Host:
    """Where a process runs, as far as telling whether a pid names it: host name, boot and PID namespace."""

    name: str
    boot_id: str | None = None
    pid_ns: str | None = None


def here() -> Host:
    boot_id = pid_ns = None
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip() or None
    with contextlib.suppress(OSError):
        pid_ns = os.readlink("/proc/self/ns/pid")
    return Host(socket.gethostname(), boot_id, pid_ns)


def ttl_for(retry_timeout: float) -> float:
    """A lease's TTL: longer than the longest retry of a write, so that an outage the sweep lives through
    does not let another sweep take its study over."""
    return max(TTL, float(retry_timeout) + TTL_BEYOND_RETRY)


def new_lease(owner: str | None = None, now: float | None = None, *, ttl: float = TTL) -> Lease:
    pid, host = os.getpid(), here()
    return {
        "owner": owner or uuid.uuid4().hex,
        "host": host.name,
        "boot_id": host.boot_id,
        "pid_ns": host.pid_ns,
        "pid": pid,
        "pid_start": start_time(pid),
        "heartbeat": time.time() if now is None else now,
        "ttl": float(ttl),
    }


def ttl_of(lease: Mapping[str, Any]) -> float:
    """The TTL its holder recorded (``TTL`` when it recorded none, or nonsense)."""
    try:
        ttl = float(lease.get("ttl", TTL))
    except (TypeError, ValueError):
        return TTL
    return ttl if math.isfinite(ttl) and ttl > 0 else TTL


def shares_pids(lease: Mapping[str, Any], host: Host) -> bool:
    """Whether a pid in ``lease`` names a process ``host`` can see: same host name, same boot, same PID
    namespace. Containers with ``--network host`` (or pods with ``hostNetwork``) share a host name, not pids."""
    return (
        lease.get("host") == host.name
        and host.boot_id is not None
        and lease.get("boot_id") == host.boot_id
        and host.pid_ns is not None
        and lease.get("pid_ns") == host.pid_ns
    )


def is_live(
    lease: Mapping[str, Any] | None,
    *,
    now: float,
    host: Host,
    running: Callable[[int, float], bool] | None = None,
) -> bool:
    """Whether ``lease`` still holds the study at ``now`` (the database's clock): its heartbeat within its
    TTL and, where its pid is one ``host`` can see (``shares_pids``), its process alive (``running``, by
    default ``hpo.procs.is_running``)."""
    if not lease or not isinstance(lease, Mapping):
        return False
    try:
        heartbeat = float(lease.get("heartbeat", 0))
    except (TypeError, ValueError):
        return False
    if now - heartbeat > ttl_of(lease):
        return False
    pid, pid_start = lease.get("pid"), lease.get("pid_start")
    if shares_pids(lease, host) and isinstance(pid, int) and isinstance(pid_start, (int, float)):
        return (running or is_running)(pid, float(pid_start))
    return True


def describe(lease: Mapping[str, Any], now: float) -> str:
    age = max(0.0, now - float(lease.get("heartbeat", now)))
    return f"host {lease.get('host')}, pid {lease.get('pid')}, last heartbeat {age:.0f}s ago"


def read(storage: Any, study_id: int) -> Lease | None:
    value = storage.get_study_system_attrs(study_id).get(KEY)
    return dict(value) if isinstance(value, Mapping) else None


def write(storage: Any, study_id: int, lease: Mapping[str, Any] | None) -> None:
    storage.set_study_system_attr(study_id, KEY, dict(lease) if lease else None)


def peek(storage: Any, study_id: int) -> tuple[Lease | None, float]:
    """The study's lease (through an Optuna storage) and the database's time now, for a look that takes
    no lock and writes nothing."""
    held = read(storage, study_id)
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return held, time.time()
    with engine.connect() as conn:
        return held, db_now(conn)


# ---------------------------------------------------------------------------------------------- the record
def db_now(conn: Any) -> float:
    """Seconds since the epoch by the database's clock (PostgreSQL); the local clock for SQLite."""
    import sqlalchemy

    if conn.dialect.name != "postgresql":
        return time.time()
    return float(conn.execute(sqlalchemy.text("SELECT extract(epoch FROM clock_timestamp())")).scalar())


def _table() -> Any:
    from optuna.storages._rdb import models  # Optuna's study_system_attributes: where set_study_system_attr writes

    return models.StudySystemAttributeModel.__table__


def _read_raw(conn: Any, study_id: int) -> tuple[bool, str | None]:
    """(whether the study has a lease row, its JSON text)."""
    import sqlalchemy

    t = _table()
    row = conn.execute(sqlalchemy.select(t.c.value_json).where(t.c.study_id == study_id, t.c.key == KEY)).first()
    return (row is not None, None if row is None else row[0])


def _parse(raw: str | None) -> Lease | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return dict(value) if isinstance(value, Mapping) else None


def _swap(conn: Any, study_id: int, exists: bool, old: list[str | None], new: str) -> bool:
    """Write ``new`` if the record is still one of ``old`` (one statement); whether it was written."""
    import sqlalchemy

    t = _table()
    if not exists:
        conn.execute(sqlalchemy.insert(t).values(study_id=study_id, key=KEY, value_json=new))
        return True
    where = [t.c.study_id == study_id, t.c.key == KEY]
    known = [v for v in old if v is not None]
    same = t.c.value_json.in_(known) if known else sqlalchemy.false()
    if None in old:
        same = sqlalchemy.or_(same, t.c.value_json.is_(None))
    return bool(conn.execute(sqlalchemy.update(t).where(*where, same).values(value_json=new)).rowcount == 1)


@contextlib.contextmanager
def _locked(url: str, study_id: int) -> Iterator[Any]:
    """The study's lease lock held, and a connection to read and write the record on (autocommit)."""
    with exclusive(url, LEASE_LOCK_BASE + study_id, timeout=LOCK_TIMEOUT) as conn:
        if conn is not None:
            yield conn
            return
        with _connection(url) as own:
            yield own


@contextlib.contextmanager
def _connection(url: str) -> Iterator[Any]:
    """A connection of its own (no pool: nothing is kept between uses), in autocommit mode."""
    import sqlalchemy

    parsed = parse_url(url)
    args: dict[str, Any] = {"timeout": 10}
    if parsed.backend == "postgresql":
        args = {"connect_timeout": 10, "application_name": "hpo-lease", "options": "-c statement_timeout=10000"}
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT", connect_args=args
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------- take, give back
def acquire(url: str, storage: Any, study_id: int, mine: Lease) -> Lease | None:
    """Take the study's lease for ``mine`` unless another live sweep holds it: that holder's lease (nothing
    written), or None once the lease is written as ours. Decided once, under the study's lock, by the
    database's clock. (``storage`` is not used: the record is read and written on the lock's connection.)"""
    del storage
    with _locked(url, study_id) as conn:
        for _ in range(5):  # a holder's renewal (a swap without the lock) may land between the read and the write
            exists, raw = _read_raw(conn, study_id)
            held, now = _parse(raw), db_now(conn)
            if held and held.get("owner") != mine["owner"] and is_live(held, now=now, host=here()):
                return held
            if _swap(conn, study_id, exists, [raw], json.dumps({**mine, "heartbeat": now})):
                return None
    raise StudyBusyError(f"the lease of study id {study_id} kept changing while this sweep tried to take it")


def release(url: str, storage: Any, study_id: int, owner: str) -> bool:
    """Give the lease up if ``owner`` holds it. True: it is no longer ours (released, or taken over).
    (``storage`` is not used, as in ``acquire``.)"""
    del storage
    with _locked(url, study_id) as conn:
        exists, raw = _read_raw(conn, study_id)
        held = _parse(raw)
        if held and held.get("owner") == owner:
            _swap(conn, study_id, exists, [raw], json.dumps(None))
    return True


def taken_over(name: str, held: Lease | None, now: float, owner: str) -> str:
    """Why the holder ``owner`` lost its lease to the record ``held``, for the one line the sweep stops with."""
    if not held:
        return f"the lease on study {name!r} was given up by another process; stopping this sweep"
    if held.get("owner") == owner:
        return f"the lease on study {name!r} was rewritten by another process; stopping this sweep"
    return f"another hpo sweep took study {name!r} over ({describe(held, now)}); stopping this one"


# ------------------------------------------------------------------------------------------ the keeper
class Keeper:
    """Renews ``mine`` on the study every ``interval`` seconds from a daemon thread, on its own connection,
    and fences its holder: ``check()`` (no I/O) and ``verify(conn)`` (one read) raise ``LeaseLostError``
    once the lease is not this holder's any more. Once lost, always lost."""

    def __init__(self, url: str, study_id: int, mine: Lease, name: str, *, interval: float = HEARTBEAT) -> None:
        self._url, self._study_id, self._mine, self._name = url, study_id, dict(mine), name
        self._interval = interval
        self.ttl = ttl_of(mine)
        self._margin = min(MARGIN, self.ttl / 3)
        self._accepted: list[str] = []  # the record as written last, and writes since whose outcome is unknown
        self._renewed_at = time.monotonic()  # before the last renewal that landed
        self._lost: str | None = None
        self._failed: str | None = None  # the last renewal's error (masked), None once one lands
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """The first renewal, here (database errors raised to the caller, who retries); then the thread.
        False, and no thread, when the lease is not ``mine``."""
        self.renew()
        if self._lost is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="hpo-lease", daemon=True)
        self._thread.start()
        return True

    def renew(self) -> None:
        """One renewal: the record rewritten with the database's time, if it is still what we wrote."""
        began = time.monotonic()
        with _connection(self._url) as conn:
            exists, raw = _read_raw(conn, self._study_id)
            accepted = self._accepted
            if not accepted:  # the first renewal: the lease the driver took for us, whatever its heartbeat
                held = _parse(raw)
                if not (exists and held and held.get("owner") == self._mine["owner"]):
                    self._lose(taken_over(self._name, held, db_now(conn), self._mine["owner"]))
                    return
                accepted = [raw] if raw is not None else []
            new = json.dumps({**self._mine, "heartbeat": db_now(conn)})
            self._accepted = [*accepted, new]  # before the write: a verify that reads it after it lands knows it
            if _swap(conn, self._study_id, exists, list(accepted), new):
                self._accepted, self._renewed_at, self._failed = [new], began, None
                return
            _, raw = _read_raw(conn, self._study_id)
            self._lose(taken_over(self._name, _parse(raw), db_now(conn), self._mine["owner"]))

    def _run(self) -> None:
        while not self._stop.wait(self._interval) and self.lost() is None:
            try:
                self.renew()
            except Exception as e:  # the database may be away: try again next time; the TTL bounds how long
                self._failed = redact((str(e).splitlines() or [type(e).__name__])[0], self._url)
                log.warning("could not renew the study's lease: %s", self._failed)

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            log.warning("%s", why)

    def lost(self) -> str | None:
        """Why the lease is no longer ours, or None while it is."""
        age = time.monotonic() - self._renewed_at
        if self._lost is None and age > self.ttl - self._margin:
            # renewals that raised mean the database could not be reached: say that first, it is the cause
            cause = f"lost the storage ({self._failed}): " if self._failed else ""
            self._lose(
                f"{cause}could not renew the lease on study {self._name!r} for {age:.0f}s (its TTL is "
                f"{self.ttl:.0f}s: storage_options.retry_timeout + 30s); stopping this sweep so that no two "
                "sweeps write the study"
            )
        return self._lost

    def check(self) -> None:
        """``LeaseLostError`` if the lease is known lost (no I/O)."""
        why = self.lost()
        if why is not None:
            raise LeaseLostError(why)

    def verify(self, conn: Any) -> None:
        """``check``, then one read on ``conn``: ``LeaseLostError`` unless the record is what we wrote."""
        self.check()
        _, raw = _read_raw(conn, self._study_id)
        # read after the record: a renewal names its write here before making it, so one that landed is known
        if raw not in self._accepted:
            self._lose(taken_over(self._name, _parse(raw), db_now(conn), self._mine["owner"]))
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
