"""What a sweep tells its user while it runs. The loop calls an ``Observer``; the CLI picks one."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO


class Observer(Protocol):
    def message(self, text: str) -> None: ...
    def trial_finished(
        self, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
    ) -> None: ...
    def tick(self, live: list[dict[str, Any]], counts: Mapping[str, int], best: Mapping[str, Any] | None) -> None: ...


def format_params(params: Mapping[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def format_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class LineObserver:
    """Plain log lines, one per finished trial: for pipes, CI logs and ``--no-progress``."""

    def __init__(self, stream: TextIO | None = None, *, metric: str = "value") -> None:
        self._out = stream or sys.stdout
        self._metric = metric

    def message(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def trial_finished(
        self, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
    ) -> None:
        state = summary["state"]
        value = summary.get("value")
        val = f" {self._metric}={value:.4f}" if isinstance(value, float) else ""
        steps = summary.get("steps")
        if state == "WAITING":  # asha paused it (WAITING in the study): it may resume
            state = "PAUSED"
        stopped = state in ("PRUNED", "PAUSED")
        where = f" at epoch {steps}" if stopped and steps else f" after {steps} epochs" if steps else ""
        reason = f" ({summary['reason']})" if state == "FAIL" and summary.get("reason") else ""
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        best_txt = f" | best #{best['number']} {best['value']:.4f}" if best else ""
        print(
            f"trial {summary['number']} {state}{val}{where}{reason} [{format_params(summary.get('params', {}))}]"
            f" | finished {done}{best_txt}",
            file=self._out,
            flush=True,
        )

    def tick(self, live: list[dict[str, Any]], counts: Mapping[str, int], best: Mapping[str, Any] | None) -> None:
        pass


class QuietObserver:
    def message(self, text: str) -> None:
        pass

    def trial_finished(
        self, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
    ) -> None:
        pass

    def tick(self, live: list[dict[str, Any]], counts: Mapping[str, int], best: Mapping[str, Any] | None) -> None:
        pass


class Clock:
    """Elapsed time and a naive ETA from finished-trial throughput."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def eta(self, done_now: int, done_before: int, target: int) -> float | None:
        n = done_now - done_before
        if n <= 0 or done_now >= target:
            return None
        return self.elapsed() / n * (target - done_now)
