"""The reporter interface between a training run and whoever watches it (the sweep's coordinator, or nobody).

``fit`` calls ``reporter(epoch, metrics)`` after each epoch and stops when the answer is ``PRUNE``; on ``PAUSE``
it saves a checkpoint at that epoch and stops, to be resumed later by a call with the same checkpoint folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Reporter = Callable[[int, Mapping[str, float]], str]
CONTINUE = "continue"
PRUNE = "prune"
PAUSE = "pause"


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither), through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
