"""Schema maintenance: bring a storage's Optuna tables up to this Optuna's schema (``hpo storage upgrade``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.errors import StorageError
from storage.factory import close_storage, engine_kwargs, storage_errors
from storage.url import parse_url


@dataclass(frozen=True)
class Upgrade:
    before: str
    after: str
    head: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade(url: str) -> Upgrade:
    """Run Optuna's schema migrations on ``url`` up to the newest revision; a no-op when already there."""
    import optuna

    parsed = parse_url(url)
    if parsed.is_sqlite and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser().resolve()
        if not path.is_file():  # SQLite would create an empty file to "upgrade"
            raise StorageError(f"cannot upgrade storage {parsed}: no such file {path}")
    with storage_errors(url, "cannot upgrade storage"):
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs(parsed), skip_compatibility_check=True, skip_table_creation=True
        )
        try:
            before, head = storage.get_current_version(), storage.get_head_version()
            if before != head:
                storage.upgrade()
            return Upgrade(before, storage.get_current_version(), head)
        finally:
            close_storage(storage)
