"""Storage: a storage URL to an Optuna storage with bounded pools, retries and masked secrets.

``storage`` imports neither ``hpo`` nor ``trials``.
"""

from __future__ import annotations

from storage.errors import StorageError
from storage.factory import (
    POOL_SIZE,
    close_storage,
    engine_kwargs,
    is_transient,
    open_storage,
    opened,
    retry_transient,
    storage_errors,
)
from storage.url import StorageURL, mask_url, parse_url, redact, strip_password

__all__ = [
    "POOL_SIZE",
    "StorageError",
    "StorageURL",
    "close_storage",
    "engine_kwargs",
    "is_transient",
    "mask_url",
    "open_storage",
    "opened",
    "parse_url",
    "redact",
    "retry_transient",
    "storage_errors",
    "strip_password",
]
