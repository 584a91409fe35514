"""One read-only connection to a study database, without building Optuna's storage.

``hpo studies`` and ``hpo status`` read a few aggregates. Optuna's ``RDBStorage`` costs them a pooled engine,
its session factory and its version manager, which imports Alembic even with the version check skipped (about
half a second of start-up on a busy machine). The queries in ``hpo.views.queries`` need none of that: a plain
SQLAlchemy engine without a pool (``NullPool``: the one connection closes with the block) over Optuna's tables.

Like ``storage.opened(url, create_schema=False)`` it creates nothing: a missing SQLite file or a database
without Optuna's tables is a ``StorageError``, and every database error is one line with the password masked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from storage import StorageError, engine_kwargs, parse_url, storage_errors


@contextlib.contextmanager
def connect(url: str, *, connect_timeout: float = 10.0) -> Iterator[sa.Connection]:
    """One connection to the database at ``url`` for the block's reads; closed (and the engine disposed) after."""
    parsed = parse_url(url)
    if parsed.is_sqlite and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser().resolve()
        if not path.parent.is_dir():
            raise StorageError(f"storage {parsed}: folder {path.parent} does not exist")
        if not path.is_file():  # connecting would create an empty file
            raise StorageError(f"storage {parsed}: no such file {path} (run a sweep first, or pass --storage)")
    connect_args = engine_kwargs(parsed, connect_timeout=connect_timeout).get("connect_args", {})
    with storage_errors(url, "cannot open storage"):
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with storage_errors(url, "cannot open storage"):
            conn = engine.connect()
        with conn, storage_errors(url, "storage error on"):
            try:
                yield conn
            except (sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
                if _no_schema(e):
                    raise StorageError(f"storage {parsed} holds no Optuna study yet (run a sweep first)") from e
                raise
    finally:
        engine.dispose()


def _no_schema(e: Exception) -> bool:
    """Whether a database error says Optuna's tables are missing (PostgreSQL, SQLite, MySQL wording)."""
    text = str(getattr(e, "orig", e)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text) or "doesn't exist" in text
