"""One factory from a storage URL to an Optuna ``RDBStorage`` with a bounded connection pool.

Whoever calls it owns the storage and disposes it (``close_storage``); nothing here is module-level.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from storage.errors import StorageError
from storage.locks import SCHEMA_LOCK_KEY, exclusive
from storage.url import StorageURL, parse_url, redact

T = TypeVar("T")

#: Connections one storage may hold. Optuna nests a second session in some calls, and
#: pool_size=1 with no overflow deadlocks (FACTS.md), so 2 is the floor.
POOL_SIZE = 2


def engine_kwargs(url: StorageURL, *, connect_timeout: float = 10.0) -> dict[str, Any]:
    """SQLAlchemy engine options for ``url``: a bounded pool, pre-ping and a connect timeout."""
    if url.is_sqlite:
        # SQLite waits for a lock this long instead of failing at once with "database is locked".
        return {"connect_args": {"timeout": 60}}
    kwargs: dict[str, Any] = {
        "pool_size": POOL_SIZE,
        "max_overflow": 0,
        "pool_timeout": 60,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }
    if url.backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": max(1, int(connect_timeout)), "application_name": "hpo"}
    return kwargs


def open_storage(
    url: str, *, create_schema: bool = True, connect_timeout: float = 10.0, check_version: bool = True
) -> Any:
    """An Optuna ``RDBStorage`` for ``url``.

    ``create_schema`` creates the tables when they are missing; only the sweep driver does this, once,
    before any other process opens the database (two processes creating the schema on an empty
    PostgreSQL at once fail with IntegrityError). Without it, a database that holds no study yet (a
    missing SQLite file, a PostgreSQL database without Optuna's tables) is a ``StorageError``, and
    nothing is created. ``check_version=False`` skips Optuna's schema-version check (queries, and an
    Alembic import): for a process that opens a database its driver has just checked.
    """
    import optuna
    import sqlalchemy.exc

    parsed = parse_url(url)
    if parsed.is_sqlite and parsed.database and parsed.database != ":memory:":
        import pathlib

        path = pathlib.Path(parsed.database).expanduser().resolve()
        if not path.parent.is_dir():
            raise StorageError(f"storage {parsed}: folder {path.parent} does not exist")
        if not create_schema and not path.is_file():
            raise StorageError(f"storage {parsed}: no such file {path} (run a sweep first, or pass --storage)")
    with storage_errors(url, "cannot open storage"), _schema_lock(parsed, create_schema, connect_timeout):
        # made, then initialised, so that a constructor that fails (no tables yet, a refused connection) still
        # leaves us its engine to close: else its pooled connection stays open until garbage collection, and a
        # sweep's set-up held two such connections beside its own (a peak of 5 where the budget says 3)
        storage = optuna.storages.RDBStorage.__new__(optuna.storages.RDBStorage)
        try:
            storage.__init__(  # type: ignore[misc]
                url,
                engine_kwargs=engine_kwargs(parsed, connect_timeout=connect_timeout),
                skip_table_creation=not create_schema,
                skip_compatibility_check=not check_version,
            )
        except sqlalchemy.exc.ProgrammingError as e:
            close_storage(storage)
            if not create_schema and "does not exist" in str(e):
                raise StorageError(f"storage {parsed} holds no Optuna study yet (run a sweep first)") from e
            raise
        except BaseException:
            close_storage(storage)
            raise
        return storage


@contextlib.contextmanager
def _schema_lock(url: StorageURL, create_schema: bool, connect_timeout: float) -> Iterator[None]:
    """Serialize schema creation: two processes creating Optuna's tables on an empty database at once fail
    (PostgreSQL: IntegrityError on pg_type; SQLite: "table already exists"), so creators take turns."""
    if not create_schema:
        yield
        return
    with exclusive(url, SCHEMA_LOCK_KEY, connect_timeout=connect_timeout):
        yield


def close_storage(storage: Any) -> None:
    """Close every pooled connection of a storage made by ``open_storage`` (a no-op for others)."""
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is not None:
        engine.dispose()


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a lost or refused database connection, worth retrying."""
    import sqlalchemy.exc

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sqlalchemy.exc.TimeoutError):  # pool checkout timed out
            return True
        if type(e).__name__ in ("OperationalError", "InterfaceError") and type(e).__module__.startswith("psycopg2"):
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_transient(
    fn: Callable[[], T],
    *,
    timeout: float,
    on_retry: Callable[[float, BaseException], None] | None = None,
    initial_delay: float = 0.25,
    max_delay: float = 5.0,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient database errors with exponential backoff.

    Gives up after ``timeout`` seconds of failures and re-raises the last error. ``on_retry(elapsed, error)``
    is called before each wait (for a log line).
    """
    start = time.monotonic()
    delay = initial_delay
    while True:
        try:
            return fn()
        except Exception as e:
            elapsed = time.monotonic() - start
            if not is_transient(e) or elapsed >= timeout:
                raise
            if on_retry is not None:
                on_retry(elapsed, e)
            time.sleep(min(delay, max(0.0, timeout - elapsed)))
            delay = min(delay * 2, max_delay)


def one_line(exc: BaseException) -> str:
    """The most useful first line of a database error (the driver's message, not SQLAlchemy's boilerplate)."""
    orig = getattr(exc, "orig", None)
    cause = orig or exc.__cause__ or exc
    text = str(cause).strip() or type(cause).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(cause).__name__
    # psycopg2 puts the reason on the second line ("connection ... failed" / "Connection refused").
    if len(lines) > 1 and first.endswith("failed:"):
        first = f"{first} {lines[1]}"
    return first.split("(Background on this error")[0].strip()


@contextlib.contextmanager
def storage_errors(url: str, what: str) -> Iterator[None]:
    """Turn database and Optuna storage errors raised inside into ``StorageError`` (one line, masked)."""
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except StorageError:
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as e:
        raise StorageError(redact(f"{what} {redact(url, url)}: {one_line(e)}", url)) from e
    except RuntimeError as e:
        # Optuna raises RuntimeError for a schema it cannot use ("run optuna storage upgrade").
        if "storage" in str(e).lower() or "schema" in str(e).lower():
            raise StorageError(redact(f"{what} {redact(url, url)}: {one_line(e)}", url)) from e
        raise


@contextlib.contextmanager
def opened(
    url: str, *, create_schema: bool = False, connect_timeout: float = 10.0, check_version: bool = True
) -> Iterator[Any]:
    """An Optuna storage for ``url`` (``open_storage``), database errors inside the block turned into one
    masked ``StorageError`` line, and its connections closed on the way out."""
    storage = open_storage(
        url, create_schema=create_schema, connect_timeout=connect_timeout, check_version=check_version
    )
    try:
        with storage_errors(url, "storage error on"):
            yield storage
    finally:
        close_storage(storage)
