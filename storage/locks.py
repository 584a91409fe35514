"""Cross-process mutual exclusion for one database: a PostgreSQL advisory lock, or a file lock for SQLite.

Used where a read-then-write must not interleave with another process doing the same (creating Optuna's
schema, taking a study's lease). PostgreSQL: ``pg_advisory_lock(key)`` on a connection of its own, held
while the block runs (other connections may do the block's reads and writes). SQLite: ``flock`` on the
database's folder (SQLite's own locks are POSIX record locks, which ``flock`` does not touch), so every
process on the machine that opens the same file takes turns. Other backends: no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from storage.url import StorageURL, parse_url

#: pg_advisory_lock keys: "hpo:sch" for the schema; "hpo:l" shifted, plus the study id, for a study's lease.
SCHEMA_LOCK_KEY = 0x68706F3A736368
LEASE_LOCK_BASE = 0x68706F3A6C << 20


@contextlib.contextmanager
def exclusive(url: str | StorageURL, key: int, *, connect_timeout: float = 10.0) -> Iterator[None]:
    """Hold the lock ``key`` on the database at ``url`` while the block runs (waits for other holders)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.backend == "postgresql":
        with _pg_lock(parsed, key, connect_timeout):
            yield
    elif parsed.is_sqlite and parsed.database and parsed.database != ":memory:":
        with _folder_lock(Path(parsed.database).expanduser().resolve().parent):
            yield
    else:
        yield


@contextlib.contextmanager
def _pg_lock(url: StorageURL, key: int, connect_timeout: float) -> Iterator[None]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        url.raw, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": max(1, int(connect_timeout))}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite's own write lock is all there is
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
