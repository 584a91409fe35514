"""The live view of a running sweep in a terminal (Rich): counts, best so far, ETA, running trials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hpo.progress import Clock, LineObserver, format_duration, format_params


class LiveObserver:
    """Plain lines for finished trials above a live panel that refreshes every second."""

    def __init__(self, *, metric: str, target: int, console: Console | None = None) -> None:
        self._console = console or Console()
        self._lines = LineObserver(self._console.file, metric=metric)  # type: ignore[arg-type]
        self._metric = metric
        self._target = target
        self._clock = Clock()
        self._start_done: int | None = None
        self._live = Live(Text("starting..."), console=self._console, refresh_per_second=2, transient=True)
        self._live.start()

    def message(self, text: str) -> None:
        self._live.console.print(text, markup=False, highlight=False)

    def trial_finished(
        self, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
    ) -> None:
        self._live.console.file.flush()
        self._lines._out = self._live.console.file
        self._live.console.print(_line(self._lines, summary, counts, best), markup=False, highlight=False)

    def tick(self, live: list[dict[str, Any]], counts: Mapping[str, int], best: Mapping[str, Any] | None) -> None:
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        if self._start_done is None:
            self._start_done = done
        eta = self._clock.eta(done, self._start_done, self._target)
        head = Text(
            f"finished {done}/{self._target}  complete {counts.get('COMPLETE', 0)}  pruned {counts.get('PRUNED', 0)}  "
            f"failed {counts.get('FAIL', 0)}  running {len(live)}  elapsed {format_duration(self._clock.elapsed())}"
            + (f"  ETA {format_duration(eta)}" if eta is not None else "")
        )
        best_txt = Text(
            f"best: trial {best['number']} {self._metric}={best['value']:.4f}  {format_params(best['params'])}"
            if best
            else "best: none yet"
        )
        table = Table(box=None, pad_edge=False)
        for col in ("trial", "epoch", self._metric, "running", "params"):
            table.add_column(col)
        for t in live:
            value = t.get(self._metric)
            table.add_row(
                str(t["number"]),
                str(int(t["epoch"])) if "epoch" in t else "-",
                f"{value:.4f}" if isinstance(value, float) else "-",
                format_duration(t["running_s"]),
                format_params(t["params"]),
            )
        self._live.update(Group(head, best_txt, table))

    def close(self) -> None:
        self._live.stop()


def _line(
    lines: LineObserver, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
) -> str:
    import io

    buf = io.StringIO()
    LineObserver(buf, metric=lines._metric).trial_finished(summary, counts, best)
    return buf.getvalue().rstrip("\n")
