"""The reporter interface between a training run and whoever watches it (the sweep's coordinator, or nobody).

``fit`` calls ``reporter(epoch, metrics)`` after each epoch and stops when the answer is ``PRUNE``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Reporter = Callable[[int, Mapping[str, float]], str]
CONTINUE = "continue"
PRUNE = "prune"
