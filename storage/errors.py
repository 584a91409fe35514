"""The storage layer's error: one line, password masked."""

from __future__ import annotations


class StorageError(Exception):
    """The study storage cannot be reached, created or used.

    The message is one line and never contains a database password.
    """
