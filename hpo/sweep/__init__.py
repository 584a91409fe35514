"""The sweep: ``run`` (``run_sweep``, the entry point), ``prepare`` (the study before the loop), ``loop``
(ask, dispatch, tell), ``ledger`` (its pure bookkeeping), ``outcomes`` (how a trial ended), ``lease`` (one
driver per study) and ``stop`` (Ctrl-C).

The names below load lazily: the coordinator's process imports ``hpo.sweep.lease`` and needs no Ray driver
code for it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_sweep": "hpo.sweep.run",
    "SweepResult": "hpo.sweep.run",
    "preflight": "hpo.sweep.run",
    "place": "hpo.sweep.run",
    "Stopper": "hpo.sweep.stop",
    "StopReason": "hpo.sweep.ledger",
    "ASK_AHEAD": "hpo.sweep.loop",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
