"""PostgreSQL set-up: create the database a storage URL names, and count its connections.

Used by the tests (a fresh database per session), the benchmarks (peak connections) and the
docker-compose set-up.
"""

from __future__ import annotations

from typing import Any

from storage.errors import StorageError
from storage.factory import one_line
from storage.url import parse_url, redact


def database_url(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server (password kept: for connecting, not printing)."""
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


def _admin_engine(url: str, database: str = "postgres") -> Any:
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url).set(database=database)
    return sqlalchemy.create_engine(
        parsed,
        isolation_level="AUTOCOMMIT",
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": 10},
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_database(url: str, *, exist_ok: bool = True) -> bool:
    """Create the PostgreSQL database named in ``url``; True if it was created now."""
    import sqlalchemy

    parsed = parse_url(url)
    if parsed.backend != "postgresql":
        raise StorageError(f"{parsed} is not a PostgreSQL URL")
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
            ).scalar()
            if exists:
                if not exist_ok:
                    raise StorageError(f"database {parsed.database!r} already exists")
                return False
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {_quote_ident(str(parsed.database))}"))
            return True
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageError(redact(f"cannot create database {parsed.database!r}: {one_line(e)}", url)) from e
    finally:
        engine.dispose()


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database named in ``url`` (terminating its connections first)."""
    import sqlalchemy

    parsed = parse_url(url)
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": parsed.database},
            )
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {_quote_ident(str(parsed.database))}"))
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageError(redact(f"cannot drop database {parsed.database!r}: {one_line(e)}", url)) from e
    finally:
        engine.dispose()


class ConnectionCounter:
    """Counts the connections other clients hold to one PostgreSQL database (pg_stat_activity).

    It keeps a single connection of its own, to the ``postgres`` maintenance database, so it never
    counts itself.
    """

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self._database = parse_url(url).database
        self._engine = _admin_engine(url)
        self._conn = self._engine.connect()
        self._query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n")

    def count(self) -> int:
        return int(self._conn.execute(self._query, {"n": self._database}).scalar() or 0)

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()

    def __enter__(self) -> ConnectionCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PeakConnections:
    """Polls ``ConnectionCounter`` in a thread while a block runs; ``peak`` is the most connections seen.

    Used by the tests and the benchmarks to check a sweep's connection budget from outside.
    """

    def __init__(self, url: str, interval: float = 0.02) -> None:
        import threading

        self._counter = ConnectionCounter(url)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-connections")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._counter.count())
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._counter.close()
