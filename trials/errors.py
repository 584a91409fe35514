"""Errors raised by the training workload.

``trials`` knows nothing of hpo, Optuna or Ray, so it has its own small hierarchy; the control plane
(``hpo``) turns these into one-line messages that name the config field and the bad value.
"""

from __future__ import annotations

from typing import Any


class TrialsError(Exception):
    """Root of every error ``trials`` raises on purpose (bad config, bad data, bad model)."""


class TrainConfigError(TrialsError, ValueError):
    """A training config value is invalid.

    ``field`` is the dotted path inside the training config (``lr``, ``dataset.val_split``) and
    ``value`` the offending value, so callers can prefix their own path (``train.lr``).
    It subclasses ``ValueError`` so pydantic reports it as a validation error of the enclosing field.
    """

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.reason = message
        super().__init__(f"{field}: {message}, got {value!r}")


class DataError(TrialsError):
    """The dataset cannot be found, read or used (missing path, empty class folder, unreadable image)."""


class ModelError(TrialsError):
    """The model or its weights cannot be built or loaded (unknown name, missing file, offline download)."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line (whitespace collapsed, at most ``limit`` characters), for embedding
    a lower-level cause (an OSError, a torch or PIL message) in one of the errors above."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
