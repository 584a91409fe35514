"""hpo's exceptions: what the CLI turns into one line and an exit code.

``storage`` and ``trials`` sit below ``hpo`` and cannot import it, so each has its own root
(``StorageError``, ``TrialsError``); ``USER_ERRORS`` names every class that means "the user's input
or environment is wrong" rather than "hpo has a bug".
"""

from __future__ import annotations

from storage.errors import StorageError
from trials.errors import TrialsError


class HpoError(Exception):
    """Root of hpo's own errors."""

    exit_code = 2


class ConfigError(HpoError):
    """A sweep or training config is invalid; the message names the field path and the bad value."""


class SweepError(HpoError):
    """A sweep could not finish (failure budget spent, coordinator lost, storage gone for too long)."""

    exit_code = 1


class LeaseLostError(SweepError):
    """This sweep no longer holds its study's lease (another sweep took it over, or it could not be renewed
    in time): the coordinator refuses every write from then on and the sweep stops."""


class VerifyError(HpoError):
    """A run of ``hpo verify`` failed for a reason that is not the user's input (a crash, a lost worker)."""

    exit_code = 1


class ClusterError(HpoError):
    """The Ray cluster named by ``--ray-address`` or ``RAY_ADDRESS`` cannot be joined."""


class StudyBusyError(HpoError):
    """Another live ``hpo sweep`` holds the study."""


class StudyNotFoundError(HpoError):
    """The named study does not exist in the storage."""


#: Errors that are the user's to fix: printed as one line (no traceback unless --debug), exit code 2
#: unless the class says otherwise.
USER_ERRORS: tuple[type[BaseException], ...] = (HpoError, StorageError, TrialsError)


def exit_code_for(exc: BaseException) -> int:
    return int(getattr(exc, "exit_code", 2))


__all__ = [
    "USER_ERRORS",
    "ClusterError",
    "ConfigError",
    "HpoError",
    "LeaseLostError",
    "StorageError",
    "StudyBusyError",
    "StudyNotFoundError",
    "SweepError",
    "TrialsError",
    "VerifyError",
    "exit_code_for",
]
