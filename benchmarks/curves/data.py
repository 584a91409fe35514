"""The recorded curves of a task, as the replay reads them, and what a finished run delivers.

A run's result is what ``fit`` hands back: early stopping (the sweep's defaults) is applied to its val curve,
its best val epoch is kept, and its test accuracy is the test accuracy at that epoch.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmarks.curves import tasks

DATA = Path(__file__).resolve().parent / "data"


def early_stopping_settings() -> tuple[int | None, float]:
    """The sweep's default early stopping (``hpo.config.SweepConfig().early_stopping``): patience, min_delta."""
    from hpo.config import SweepConfig

    es = SweepConfig().early_stopping
    return es.patience, es.min_delta


@dataclass(frozen=True)
class Run:
    config: int
    seed: int
    val: tuple[float, ...]
    test: tuple[float, ...]
    seconds: tuple[float, ...]

    def stop_epoch(self, patience: int | None, min_delta: float) -> int:
        """The epoch after which early stopping ends the run (the last epoch when it never does)."""
        from trials import early_stopping

        tracker = early_stopping.Tracker()
        for epoch, value in enumerate(self.val, start=1):
            tracker = early_stopping.update(tracker, epoch, value, mode="max", min_delta=min_delta)
            if patience is not None and early_stopping.should_stop(tracker, patience) and epoch < len(self.val):
                return epoch
        return len(self.val)

    def best_epoch(self, upto: int, min_delta: float) -> int:
        """The best val epoch among the first ``upto`` (what ``fit`` restores)."""
        from trials import early_stopping

        tracker = early_stopping.Tracker()
        for epoch, value in enumerate(self.val[:upto], start=1):
            tracker = early_stopping.update(tracker, epoch, value, mode="max", min_delta=min_delta)
        return tracker.best_epoch or upto


@dataclass
class TaskCurves:
    name: str
    params: list[dict[str, Any]]
    runs: dict[int, list[Run]]  # config index -> its runs (one per seed)
    setup_s: float
    n_val: int
    patience: int | None = None
    min_delta: float = 0.0
    _unit: dict[int, tuple[float, ...]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(next(iter(self.runs.values()))[0].val)

    def delivered(self, run: Run) -> tuple[float, float, int]:
        """A full (not pruned) run: (val, test) at its best epoch, and the epochs it trains (early stopping)."""
        stop = run.stop_epoch(self.patience, self.min_delta)
        best = run.best_epoch(stop, self.min_delta)
        return run.val[best - 1], run.test[best - 1], stop

    @cached_property
    def config_test(self) -> dict[int, float]:
        """Each recorded config's delivered test accuracy, the mean over its seeds."""
        return {c: statistics.fmean(self.delivered(r)[1] for r in runs) for c, runs in self.runs.items()}

    @cached_property
    def oracle_test(self) -> float:
        return max(self.config_test.values())

    @cached_property
    def random_test(self) -> float:
        """What a search delivers before any trial finished: a random config's test accuracy (mean of all)."""
        return statistics.fmean(self.config_test.values())

    def unit(self, params: dict[str, Any]) -> tuple[float, ...]:
        """``params`` in the unit cube of hpo's default space (log where the space is)."""
        from hpo.space import DEFAULT_SPACE

        out = []
        for name, spec in DEFAULT_SPACE.items():
            v = params[name]
            if "choices" in spec:
                out.append(spec["choices"].index(v) / (len(spec["choices"]) - 1))
            elif spec.get("log"):
                lo, hi = math.log(spec["low"]), math.log(spec["high"])
                out.append((math.log(v) - lo) / (hi - lo))
            else:
                out.append((v - spec["low"]) / (spec["high"] - spec["low"]))
        return tuple(out)

    def nearest(self, params: dict[str, Any], exclude: int | None = None) -> int:
        """The surrogate: the recorded config nearest to ``params`` (Euclidean, unit cube)."""
        if not self._unit:
            self._unit = {c: self.unit(self.params[c]) for c in self.runs}
        u = self.unit(params)
        return min(
            (c for c in self._unit if c != exclude),
            key=lambda c: (sum((a - b) ** 2 for a, b in zip(u, self._unit[c], strict=True)), c),
        )


def load(name: str, root: Path = DATA) -> TaskCurves:
    """Task ``name``'s recorded curves (every complete run in ``root/<name>.jsonl``)."""
    path = root / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no curves for task {name!r} at {path}: run python -m benchmarks.curves record")
    runs: dict[int, list[Run]] = {}
    setups, n_val, params = [], 0, tasks.configs()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        ep = row["epochs"]
        runs.setdefault(row["config"], []).append(
            Run(
                row["config"],
                row["seed"],
                tuple(e["val_acc"] for e in ep),
                tuple(e["test_acc"] for e in ep),
                tuple(e["seconds"] for e in ep),
            )
        )
        setups.append(row["setup_s"])
        n_val = row["n_val"]
    patience, min_delta = early_stopping_settings()
    return TaskCurves(name, params, runs, statistics.median(setups), n_val, patience, min_delta)
