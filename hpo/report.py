"""``hpo report``: one self-contained HTML file about a study, readable offline and easy to share.

It holds the summary ``hpo status`` prints (trials by state, the best trial, the compute pruning and
early stopping saved), the best trial's training config as YAML, Optuna's plots (plotly, with
plotly.js inlined once) and the trial table. Nothing in it loads anything from the network.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import hpo
from hpo import study as studies
from hpo import yamlio
from hpo.errors import ConfigError
from hpo.progress import format_duration
from hpo.status import StudyStatus, summarize
from storage import close_storage, open_storage, storage_errors, strip_password

#: Plot sections in the order they appear: (key, heading).
PLOTS = (
    ("history", "Optimization history"),
    ("intermediate", "Learning curves (intermediate values)"),
    ("importance", "Parameter importances"),
    ("parallel", "Parallel coordinates"),
    ("slice", "Slice"),
)


@dataclass(frozen=True)
class Plot:
    """One plot section: the figure's HTML (a div and the script that draws it), or why it is left out."""

    key: str
    heading: str
    html: str | None = None
    note: str | None = None


def write_report(storage_url: str, study_name: str, output: str | Path) -> Path:
    """Write the report on ``study_name`` to ``output`` (atomically) and return its path.

    The study must exist (``StudyNotFoundError`` otherwise); a study with no finished trial still gets
    a report, with notes where a plot has nothing to show.
    """
    storage = open_storage(storage_url, create_schema=False)
    try:
        with storage_errors(storage_url, "storage error on"):
            study = studies.load(storage, study_name)
            if len(study.directions) != 1:
                raise ConfigError(
                    f"study {study_name!r} has {len(study.directions)} objectives; "
                    "hpo report reads single-objective studies"
                )
            metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
            direction = study.direction.name.lower()
            trials = study.get_trials(deepcopy=False)
            plots = build_plots(study, metric)
    finally:
        close_storage(storage)
    status = summarize(study_name, metric, direction, trials)
    best = studies.select_best(trials, direction)
    page = render(
        status=status,
        trials=trials,
        best=best,
        plots=plots,
        source=strip_password(storage_url),
        generated=dt.datetime.now(dt.timezone.utc),
    )
    return yamlio.write_atomic(output, page)


def build_plots(study: optuna.Study, metric: str) -> list[Plot]:
    """Optuna's plots of ``study`` (plotly), each as an HTML fragment without plotly.js, or a note."""
    from optuna import visualization as vis

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    with_params = [t for t in complete if t.params]
    curves = [t for t in trials if t.intermediate_values and t.state != TrialState.FAIL]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same study, the same report
    needs_complete = f"needs a COMPLETE trial (this study has {len(complete)})"
    makers: dict[str, tuple[str | None, Callable[[], Any]]] = {
        "history": (
            None if complete else needs_complete,
            lambda: vis.plot_optimization_history(study, target_name=metric),
        ),
        "intermediate": (
            None if curves else "no trial reported intermediate values",
            lambda: _mark_pruned(vis.plot_intermediate_values(study), trials),
        ),
        "importance": (
            None
            if len(with_params) >= 2
            else f"needs at least 2 COMPLETE trials with parameters (this study has {len(with_params)})",
            lambda: vis.plot_param_importances(study, evaluator=evaluator, target_name=metric),
        ),
        "parallel": (
            None if with_params else needs_complete + " with parameters",
            lambda: vis.plot_parallel_coordinate(study, target_name=metric),
        ),
        "slice": (
            None if with_params else needs_complete + " with parameters",
            lambda: vis.plot_slice(study, target_name=metric),
        ),
    }
    plots = []
    for key, heading in PLOTS:
        skip, make = makers[key]
        if skip is not None:
            plots.append(Plot(key, heading, note=f"Left out: {skip}."))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's "experimental" and "no trials" warnings
                fig = make()
        except Exception as e:  # one plot that cannot be drawn must not cost the whole report
            reason = " ".join(str(e).split()) or type(e).__name__
            plots.append(Plot(key, heading, note=f"Left out: Optuna could not draw it ({reason})."))
            continue
        fig.update_layout(height=460, margin={"t": 60, "l": 60, "r": 30, "b": 50})
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"plot-{key}",
            config={"displaylogo": False, "responsive": True},
        )
        plots.append(Plot(key, heading, html=fragment))
    return plots


def _mark_pruned(fig: Any, trials: Sequence[FrozenTrial]) -> Any:
    """Dot the learning curves of PRUNED trials and say so in the legend."""
    pruned = {t.number for t in trials if t.state == TrialState.PRUNED}
    for trace in fig.data:
        m = re.fullmatch(r"Trial\s*(\d+)", str(trace.name or ""))
        if m and int(m[1]) in pruned:
            trace.name = f"Trial{m[1]} (pruned)"
            trace.line.dash = "dot"
    return fig


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    # what plotly's own to_html(include_plotlyjs=True) writes, once for the whole page
    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script charset="utf-8">{get_plotlyjs()}</script>'
    )


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 0 0 12px; }
.meta { color: #59636e; margin: 0 0 20px; font-size: 0.9rem; }
section { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; }
.card { border: 1px solid #d1d9e0; border-radius: 6px; padding: 10px 14px; }
.card .label { color: #59636e; font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.04em; }
.card .value { font-size: 1.35rem; font-weight: 600; margin-top: 2px; }
.card .sub { color: #59636e; font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { color: #59636e; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; border-radius: 6px; padding: 12px; overflow-x: auto; font-size: 0.85rem; }
.note { color: #59636e; font-style: italic; }
.state-COMPLETE { color: #1a7f37; } .state-PRUNED { color: #9a6700; } .state-FAIL { color: #d1242f; }
.best { background: #dafbe1; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _params_table(params: dict[str, Any]) -> str:
    if not params:
        return '<p class="note">No sampled parameters.</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in params.items())
    return f"<table>{rows}</table>"


def _summary(status: StudyStatus, best: FrozenTrial | None) -> str:
    counts = status.counts
    ended = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    by_state = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none yet"
    if best is not None:
        best_card = (
            f'<div class="card"><div class="label">best {_e(status.metric)}</div>'
            f'<div class="value">{_e(_fmt(best.value))}</div>'
            f'<div class="sub">trial {best.number}</div></div>'
        )
        best_block = f"<h2>Best trial: trial {best.number}</h2>" + _params_table(dict(best.params))
    else:
        best_card = (
            f'<div class="card"><div class="label">best {_e(status.metric)}</div>'
            '<div class="value">none</div><div class="sub">no COMPLETE trial yet</div></div>'
        )
        best_block = '<h2>Best trial</h2><p class="note">None yet: the study has no COMPLETE trial.</p>'
    cards = (
        f'<div class="card"><div class="label">trials</div><div class="value">{len(status.rows)}</div>'
        f'<div class="sub">{_e(by_state)}</div></div>'
        + best_card
        + f'<div class="card"><div class="label">epochs run</div><div class="value">{status.epochs_run}</div>'
        f'<div class="sub">of a {status.epochs_budget}-epoch budget for the {ended} trials that ended</div></div>'
        f'<div class="card"><div class="label">compute saved</div>'
        f'<div class="value">{status.saved_fraction:.0%}</div>'
        f'<div class="sub">{status.epochs_saved} epochs saved by pruning and early stopping; '
        f"{_e(format_duration(status.trial_seconds))} of trial time</div></div>"
    )
    return f'<section id="summary"><div class="cards">{cards}</div></section><section id="best">{best_block}</section>'


def _best_config(best: FrozenTrial | None) -> str:
    if best is None:
        body = '<p class="note">No COMPLETE trial yet.</p>'
    else:
        config = studies.trial_train_config(best)
        if config is None:
            body = f'<p class="note">Trial {best.number} records no training config (not run by hpo?).</p>'
        else:
            body = (
                f"<p>The full training config of trial {best.number}; <code>hpo export</code> writes it for "
                f"<code>hpo train</code>.</p><pre>{_e(yamlio.dumps(config))}</pre>"
            )
    return f'<section id="best-config"><h2>Best config</h2>{body}</section>'


def _trial_table(status: StudyStatus, best: FrozenTrial | None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in ("#", "state", status.metric, "epochs", "duration", "params", "note"))
    rows = []
    for r in status.rows:
        epochs = f"{r.epochs_run}/{r.max_epochs}" if r.max_epochs else str(r.epochs_run)
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items())
        cls = ' class="best"' if best is not None and r.number == best.number else ""
        rows.append(
            f"<tr{cls}><td class='num'>{r.number}</td><td class='state-{_e(r.state)}'>{_e(r.state)}</td>"
            f"<td class='num'>{'' if r.value is None else _e(_fmt(r.value))}</td><td class='num'>{_e(epochs)}</td>"
            f"<td class='num'>{'' if r.duration_s is None else _e(format_duration(r.duration_s))}</td>"
            f"<td>{_e(params)}</td><td>{_e(r.reason or '')}</td></tr>"
        )
    return (
        f'<section id="trials"><h2>Trials</h2><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def render(
    *,
    status: StudyStatus,
    trials: Sequence[FrozenTrial],
    best: FrozenTrial | None,
    plots: Sequence[Plot],
    source: str,
    generated: dt.datetime,
) -> str:
    """The report page. Every value from the study is HTML-escaped; plotly.js is inlined once."""
    sections = []
    for p in plots:
        body = p.html if p.html is not None else f'<p class="note">{_e(p.note)}</p>'
        sections.append(f'<section id="{_e(p.key)}" class="plot"><h2>{_e(p.heading)}</h2>{body}</section>')
    title = f"hpo report: {status.study}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hpo {_e(hpo.__version__)}">
<title>{_e(title)}</title>
<style>{_CSS}</style>
{_plotly_js() if any(p.html for p in plots) else ""}
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="meta">{_e(status.direction)} {_e(status.metric)} &middot; {len(trials)} trials &middot;
storage {_e(source)} &middot; generated {_e(generated.strftime("%Y-%m-%d %H:%M UTC"))} by hpo {_e(hpo.__version__)}</p>
{_summary(status, best)}
{_best_config(best)}
{"".join(sections)}
{_trial_table(status, best)}
</main>
</body>
</html>
"""
