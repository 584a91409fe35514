"""Cross-process mutual exclusion for one database: a PostgreSQL advisory lock, or a file lock for SQLite.

Used where a read-then-write must not interleave with another process doing the same (creating Optuna's
schema, taking a study's lease). PostgreSQL: ``pg_try_advisory_lock(key)`` on a connection of its own (in
autocommit mode, yielded to the block so that it may read and write on it), held while the block runs.
SQLite: ``flock`` on the database's folder (SQLite's own locks are POSIX record locks, which ``flock`` does
not touch), so every process on the machine that opens the same file takes turns.

Every wait has a deadline: the lock is tried, and tried again, until ``timeout`` seconds have passed; then
``LockTimeout`` names the lock. A holder that is stopped (SIGSTOP, a hung host) never freezes its waiters.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.errors import StorageError
from storage.url import StorageURL, parse_url

#: pg_advisory_lock keys: "hpo:sch" for the schema; "hpo:l" shifted, plus the study id, for a study's lease.
SCHEMA_LOCK_KEY = 0x68706F3A736368
LEASE_LOCK_BASE = 0x68706F3A6C << 20
#: Seconds a waiter tries a lock before it gives up (``exclusive``'s default).
LOCK_TIMEOUT = 60.0
_FIRST_POLL, _LAST_POLL = 0.02, 0.5  # seconds between tries: doubling from the first to the last


class LockTimeout(StorageError):
    """Another process held a lock past the waiter's deadline."""


def lock_name(key: int) -> str:
    """What the lock ``key`` guards, for messages."""
    if key == SCHEMA_LOCK_KEY:
        return "schema-creation lock"
    if LEASE_LOCK_BASE <= key < LEASE_LOCK_BASE + (1 << 20):
        return f"lease lock of study id {key - LEASE_LOCK_BASE}"
    return f"lock {key:#x}"


@contextlib.contextmanager
def exclusive(
    url: str | StorageURL, key: int, *, connect_timeout: float = 10.0, timeout: float = LOCK_TIMEOUT
) -> Iterator[Any]:
    """Hold the lock ``key`` on the database at ``url`` while the block runs, waiting at most ``timeout``
    seconds for other holders (then ``LockTimeout``). Yields the lock's own connection on PostgreSQL (in
    autocommit mode), None elsewhere."""
    parsed = parse_url(url) if isinstance(url, str) else url
    deadline = time.monotonic() + timeout
    if parsed.backend == "postgresql":
        with _pg_lock(parsed, key, connect_timeout, deadline) as conn:
            yield conn
    elif parsed.is_sqlite and parsed.database and parsed.database != ":memory:":
        with _folder_lock(Path(parsed.database).expanduser().resolve().parent, deadline):
            yield None
    else:
        yield None


def _timeout(url: StorageURL, key: int, started: float) -> LockTimeout:
    waited = time.monotonic() - started
    return LockTimeout(
        f"gave up after {waited:.0f}s waiting for the {lock_name(key)} on {url}: another hpo process holds it "
        "(a stopped or hung one: end it, and this lock is free)"
    )


def _polls(deadline: float) -> Iterator[None]:
    """Yields once now and again after each pause, until ``deadline`` (monotonic) has passed."""
    pause = _FIRST_POLL
    while True:
        yield
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(pause, left))
        pause = min(pause * 2, _LAST_POLL)


@contextlib.contextmanager
def _pg_lock(url: StorageURL, key: int, connect_timeout: float, deadline: float) -> Iterator[Any]:
    import sqlalchemy

    started = time.monotonic()
    engine = sqlalchemy.create_engine(
        url.raw,
        poolclass=sqlalchemy.pool.NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": max(1, int(connect_timeout)), "application_name": "hpo-lock"},
    )
    try:
        with engine.connect() as conn:
            try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
            if not any(conn.execute(try_lock, {"k": key}).scalar() for _ in _polls(deadline)):
                raise _timeout(url, key, started)
            try:
                yield conn
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _folder_lock(folder: Path, deadline: float) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite's own write lock is all there is
        yield
        return
    started = time.monotonic()
    fd = os.open(folder, os.O_RDONLY)
    try:
        if not any(_try_flock(fd) for _ in _polls(deadline)):
            raise LockTimeout(
                f"gave up after {time.monotonic() - started:.0f}s waiting for the file lock on {folder}: another "
                "hpo process holds it (a stopped or hung one: end it, and this lock is free)"
            )
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _try_flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
