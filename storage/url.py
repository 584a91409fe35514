"""Storage URLs: validation and password masking. Pure functions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy.engine
import sqlalchemy.exc

from storage.errors import StorageError

#: Backends hpo supports, by the dialect part of the URL scheme. MySQL is not one: a study's lease and the
#: schema creation need a lock across processes (``storage.locks``), which hpo has for PostgreSQL and SQLite only.
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

# user:password@ in anything that looks like a URL, for text we cannot parse (malformed URLs, driver errors)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL. ``str()`` of it is safe to print (password masked)."""

    raw: str
    backend: str  # sqlite | postgresql
    database: str | None
    password: str | None

    def __str__(self) -> str:
        return mask_url(self.raw)

    def __repr__(self) -> str:
        return f"StorageURL({mask_url(self.raw)!r})"

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"


def parse_url(url: str) -> StorageURL:
    """Validate a storage URL, raising ``StorageError`` with a masked, one-line message."""
    if not isinstance(url, str) or not url.strip():
        raise StorageError("storage URL is empty; expected e.g. sqlite:///hpo.db or postgresql+psycopg2://user@host/db")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:
        raise StorageError(
            f"malformed storage URL {mask_url(url)!r}; expected e.g. sqlite:///hpo.db or "
            "postgresql+psycopg2://user:password@host:5432/db"
        ) from e
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        raise StorageError(
            f"storage URL {mask_url(url)!r}: {parsed.drivername} is not supported (hpo locks a study for one sweep "
            "with PostgreSQL advisory locks or a local SQLite file); use postgresql+psycopg2://... or sqlite:///..."
        )
    if backend not in SUPPORTED_BACKENDS:
        raise StorageError(
            f"unsupported storage backend {backend!r} in {mask_url(url)!r}; use one of: {', '.join(SUPPORTED_BACKENDS)}"
        )
    if not parsed.database:
        raise StorageError(f"storage URL {mask_url(url)!r} names no database")
    return StorageURL(raw=url, backend=backend, database=parsed.database, password=parsed.password)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (works on malformed URLs too)."""
    return _USERINFO.sub(lambda m: f"{m['head']}:***@", url)


def strip_password(url: str) -> str:
    """The URL with its password removed entirely (``postgresql://user@host/db``), for exported files."""
    return _USERINFO.sub(lambda m: f"{m['head']}@", url)


def redact(text: str, url: str | None = None) -> str:
    """``text`` with every URL password masked, and the literal password of ``url`` too, wherever it appears."""
    out = mask_url(text)
    if url:
        try:
            password = sqlalchemy.engine.make_url(url).password
        except (sqlalchemy.exc.ArgumentError, ValueError):
            m = _USERINFO.search(url)
            password = m["password"] if m else None
        if password:
            out = out.replace(str(password), "***")
    return out
