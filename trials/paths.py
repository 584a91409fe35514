"""The files a training run writes in its folder: their names, and how each is written (atomically). Light
imports only: the control plane uses them too."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: The epoch checkpoint a run resumes from (removed once the run has finished).
CHECKPOINT_NAME = "checkpoint.pt"
#: The final model ``hpo train`` writes.
MODEL_NAME = "model.pt"
#: The final metrics ``hpo train`` writes.
METRICS_NAME = "metrics.json"


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` so that readers see the old file or the new one, never half of one: ``write(f)`` fills a
    temporary file in the same folder (``os.replace`` is atomic only within one file system), which is
    fsynced, renamed over ``path``, and the folder fsynced (a crash right after cannot leave an empty file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform lets a folder be opened and fsynced
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target
