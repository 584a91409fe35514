"""``hpo report``: one self-contained HTML file about a study, readable offline and easy to share.

It holds the summary ``hpo status`` prints (trials by state, the best trial, the compute pruning and
early stopping saved), the verdict of ``hpo verify`` when the study has one, the best trial's training
config as YAML, Optuna's plots (plotly, with plotly.js inlined once) and the trial table. Nothing in it
loads anything from the network.
The page is ``templates/report_page.html``, rendered by Jinja2 with autoescaping on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import re
import warnings
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import optuna
from markupsafe import Markup
from optuna.trial import FrozenTrial, TrialState

import hpo
from hpo import files
from hpo import study as studies
from hpo.progress import format_duration
from hpo.ranking import better, primary, ranks
from hpo.views import queries
from hpo.views.status import StudyStatus, summarize
from hpo.views.studies import status_from_sql
from storage import opened, strip_password

#: A multi-objective study's first plot section.
PARETO = ("pareto", "Pareto front")
#: Plot sections in the order they appear: (key, heading).
PLOTS = (
    ("history", "Optimization history"),
    ("intermediate", "Learning curves (intermediate values)"),
    ("importance", "Parameter importances"),
    ("parallel", "Parallel coordinates"),
    ("slice", "Slice"),
)


@dataclass(frozen=True)
class Verification:
    """The last ``hpo verify`` verdict stored on the study (user attr ``hpo:verify``), as the report shows it."""

    reproduced: bool
    metric: str
    val_mean: float | None
    trial: int | None
    trial_value: float | None
    tolerance: float | None
    test_metric: str
    gain_mean: float | None
    ci95: tuple[float, float] | None
    seeds: list[int]
    baseline: str
    verified_at: str


def verification_of(raw: Any) -> Verification | None:
    """The verdict in a study's ``hpo:verify`` user attr, or None when there is none or it is not one
    ``hpo verify`` wrote (the attr is data from the database: read defensively, never trusted)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("reproduced"), bool):
        return None
    gain = raw.get("gain")
    gain = gain if isinstance(gain, dict) else {}
    ci = gain.get("ci95")
    lo_hi = (
        (float(ci[0]), float(ci[1]))
        if isinstance(ci, list) and len(ci) == 2 and all(_is_number(x) for x in ci)
        else None
    )
    seeds = raw.get("seeds")
    return Verification(
        reproduced=raw["reproduced"],
        metric=str(raw.get("metric", "value")),
        val_mean=_number_or_none(raw.get("val_mean")),
        trial=raw["trial"] if isinstance(raw.get("trial"), int) else None,
        trial_value=_number_or_none(raw.get("trial_value")),
        tolerance=_number_or_none(raw.get("tolerance")),
        test_metric=str(raw.get("test_metric", "test metric")),
        gain_mean=_number_or_none(gain.get("mean")),
        ci95=lo_hi,
        seeds=[s for s in seeds if isinstance(s, int)] if isinstance(seeds, list) else [],
        baseline=str(raw.get("baseline_source", "")),
        verified_at=str(raw.get("verified_at", "")),
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number_or_none(x: Any) -> float | None:
    return float(x) if _is_number(x) else None


@dataclass(frozen=True)
class Plot:
    """One plot section: the figure's HTML (a div and the script that draws it), or why it is left out.

    ``html`` is plotly's output and goes into the page as markup; ``note`` is text, escaped like the rest.
    """

    key: str
    heading: str
    html: str | None = None
    note: str | None = None
    #: a line under a drawn plot saying how it was made (text, escaped)
    caption: str | None = None


#: Up to this many trials the report draws every trial and lists every one; past it, a sample (below).
PLOT_ALL = 300
#: Past PLOT_ALL, the plots draw this many trials: the best ``PLOT_BEST`` (and a multi-objective study's
#: Pareto front), the rest spread evenly over the others by number; at most ``CURVES`` learning curves.
PLOT_SAMPLE = 300
PLOT_BEST = 100
CURVES = 100
#: Past PLOT_ALL, the parallel coordinates and the slice plot draw this many of the sample (the best half of
#: them, the rest spread): they draw a line (a point per parameter) per trial, and the parallel coordinates a
#: plotly trace per trial (about 500 bytes each: 148 KB of a 10,000-trial report at 300).
PLOT_DETAIL = 100
#: Past this many trials, the trial table lists the best ``TABLE_ROWS`` only (``hpo status --limit 0`` lists all).
TABLE_ALL = 300
TABLE_ROWS = 100
#: fANOVA's random forest: Optuna's default 64 trees up to ``IMPORTANCE_FULL`` COMPLETE trials with parameters,
#: ``IMPORTANCE_TREES`` past it. Its cost grows with trees x trials (300 trials x 64 trees: about 6 s on a busy
#: 2-core machine, the bulk of a large study's report; 16 trees: a quarter of that, the same ranking on P9's study).
IMPORTANCE_FULL = 100
IMPORTANCE_TREES = 16


def write_report(storage_url: str, study_name: str, output: str | Path) -> Path:
    """Write the report on ``study_name`` to ``output`` (atomically) and return its path.

    The study must exist (``StudyNotFoundError`` otherwise); a study with no finished trial still gets
    a report, with notes where a plot has nothing to show. A large study (past ``PLOT_ALL`` trials) is
    read by SQL (``hpo.views.queries``) and drawn from a sample its page names.
    """
    with opened(storage_url, check_version=False) as storage:  # read-only (hpo.views.studies)
        study = studies.load(storage, study_name)
        metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
        verification = verification_of(study.user_attrs.get(studies.ATTR_VERIFY))
        engine = queries.engine_of(storage)
        if engine is None:
            trials = study.get_trials(deepcopy=False)
            status = summarize(
                study_name,
                metric,
                studies.primary_direction(study),
                trials,
                objectives=studies.objectives(study),
                front=studies.pareto_front(study),
            )
            plots, sampled = build_plots(study, metric), None
            best = None if status.best is None else next(t for t in trials if t.number == status.best["number"])
            config = None if best is None else studies.trial_train_config(best)
        else:
            with engine.connect() as conn:
                status, plots, sampled = _from_sql(conn, study, metric)
    page = render(
        status=status,
        plots=plots,
        source=strip_password(storage_url),
        generated=dt.datetime.now(dt.timezone.utc),
        verification=verification,
        best_config=sampled.best_config if sampled else config,
        sample_note=sampled.note if sampled else None,
    )
    return files.write_atomic(output, page)


@dataclass(frozen=True)
class Sampled:
    """What a report drew from: the note saying so (None: every trial) and the best trial's config."""

    note: str | None
    best_config: dict[str, Any] | None


def _from_sql(conn: Any, study: optuna.Study, metric: str) -> tuple[StudyStatus, list[Plot], Sampled]:
    sid = study._study_id
    direction = studies.primary_direction(study)
    pairs = queries.trial_numbers(conn, sid)  # (trial_id, number) by number
    ids = [tid for tid, _ in pairs]
    info = queries.study_info(conn, study.study_name)
    assert info is not None  # the study was just loaded
    status = status_from_sql(conn, info, limit=None if len(ids) <= TABLE_ALL else TABLE_ROWS)
    if len(ids) <= TABLE_ALL:  # every trial, listed by number
        status = dataclasses.replace(status, rows=sorted(status.rows, key=lambda r: r.number))
    best = queries.best_trial(conn, sid, direction)
    if len(ids) <= PLOT_ALL:
        chosen, note = ids, None
    else:
        top = queries.top_trial_ids(conn, sid, direction, PLOT_BEST)
        numbers = {p["number"] for p in status.pareto}
        front = [tid for tid, number in pairs if number in numbers]
        chosen = sample_ids(ids, [*([best[0]] if best else []), *top, *front], PLOT_SAMPLE)
        note = (
            f"This study has {len(ids):,} trials: the plots draw {len(chosen):,} of them, the {PLOT_BEST} with the "
            f"best {metric}{' and the Pareto front' if front else ''} and the rest spread evenly over the others by "
            f"trial number; the learning curves {min(CURVES, len(chosen))} of those and the parallel coordinates and "
            f"slice plots {min(PLOT_DETAIL, len(chosen))} (the best half of them, the rest spread); the parameter "
            f"importances are estimated from the same {len(chosen):,} trials. The summary, the best trial and the "
            f"counts are over all {len(ids):,} trials, and so is the optimization history's best-value line."
        )
    # the sample (or, drawing every trial, just the best) through Optuna's own loader, filtered by id: ids up
    # to the study's last one, and none after it (``_get_trials`` reads ``id IN (...) OR id > last``)
    wanted = set(chosen) if note is not None else {best[0]} if best else set()
    rdb: Any = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    loaded = rdb._get_trials(sid, None, wanted, max(ids)) if wanted else []
    trials = sorted((t for t in loaded if t._trial_id in wanted), key=lambda t: t.number)
    best_trial = None if best is None else next((t for t in trials if t._trial_id == best[0]), None)
    config = None if best_trial is None else studies.trial_train_config(best_trial)
    if note is None:
        return status, build_plots(study, metric), Sampled(None, config)
    best_ids = [t for t in top if t in wanted]
    curves = SampledStudy(study, sample_trials(trials, best_ids, CURVES))
    detail = SampledStudy(study, sample_trials(trials, best_ids, PLOT_DETAIL))
    points = [nv for nv in queries.complete_values(conn, sid, 1).values() if math.isfinite(nv[1][0])]
    history = _history(trials, sorted((n, v[0]) for n, v in points), direction, metric)
    plots = build_plots(
        SampledStudy(study, trials), metric, curve_study=curves, detail_study=detail, drawn={"history": history}
    )
    return status, [_compact(p) for p in plots], Sampled(note, config)


_LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:e[-+]?\d+)?")


def _compact(plot: Plot) -> Plot:
    """A sampled study's figure with its numbers to 6 significant digits (plotly writes 17: a third of the
    page's bytes past plotly.js, for no visible difference)."""
    if plot.html is None:
        return plot
    return dataclasses.replace(plot, html=_LONG_NUMBER.sub(lambda m: f"{float(m[0]):.6g}", plot.html))


def _history(sample: Sequence[FrozenTrial], every: Sequence[tuple[int, float]], direction: str, metric: str) -> Plot:
    """The optimization history of a sampled study: the sample's values as points, and the best value so far
    over every trial (``every``: (number, value) of each COMPLETE trial) as a step line through its changes.
    (Optuna's own plot indexes values by trial number, so it cannot draw a sample.)"""
    import plotly.graph_objects as go

    key, heading = PLOTS[0]
    if not every:
        return Plot(key, heading, note="Left out: needs a COMPLETE trial (this study has 0).")
    xs: list[int] = []
    ys: list[float] = []
    for number, value in every:
        if not ys or better(value, ys[-1], direction):
            xs.append(number)
            ys.append(value)
    xs.append(every[-1][0])
    ys.append(ys[-1])
    done = [t for t in sample if t.state == TrialState.COMPLETE and ranks(primary(t))]
    fig = go.Figure(
        [
            go.Scatter(x=[t.number for t in done], y=[primary(t) for t in done], mode="markers", name=metric),
            go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name="Best value (all trials)"),
        ]
    )
    fig.update_layout(
        title="Optimization History Plot",
        xaxis_title="Trial",
        yaxis_title=metric,
        height=460,
        margin={"t": 60, "l": 60, "r": 30, "b": 50},
    )
    return Plot(key, heading, html=_fragment(fig, key))


def sample_ids(ids: Sequence[int], keep: Sequence[int], n: int) -> list[int]:
    """``keep`` (in that order, without repeats) and then ``ids`` spread evenly over the rest, ``n`` in all
    (more when ``keep`` alone is more). Deterministic: the same study, the same sample."""
    out = list(dict.fromkeys(keep))
    taken = set(out)
    rest = [i for i in ids if i not in taken]
    k = max(0, n - len(out))
    if k and rest:
        step = len(rest) / k
        out += list(dict.fromkeys(rest[int(j * step)] for j in range(min(k, len(rest)))))
    return out


def sample_trials(trials: Sequence[FrozenTrial], first: Sequence[int], n: int) -> list[FrozenTrial]:
    """``n`` of ``trials``: those whose trial ids are in ``first`` (half of ``n`` at most), the rest spread."""
    by_id = {t._trial_id: t for t in trials}
    chosen = sample_ids([t._trial_id for t in trials], list(first)[: n // 2], n)
    return sorted((by_id[i] for i in chosen), key=lambda t: t.number)


class SampledStudy(optuna.Study):
    """A study whose trials are a sample of another's (for Optuna's plots): its name, directions and user attrs
    come from the database, its trials from the sample."""

    def __init__(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage)
        self._sample = list(trials)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in self._sample if states is None or t.state in states]


def build_plots(
    study: optuna.Study,
    metric: str,
    *,
    curve_study: optuna.Study | None = None,
    detail_study: optuna.Study | None = None,
    drawn: Mapping[str, Plot] | None = None,
) -> list[Plot]:
    """Optuna's plots of ``study`` (plotly), each as an HTML fragment without plotly.js, or a note; the
    learning curves those of ``curve_study`` and the parallel coordinates and slice plots those of
    ``detail_study`` (smaller samples of a large study) when given, and ``drawn``'s plots (by key) in place of
    Optuna's (which are then not drawn at all)."""
    makers = _plot_makers(study, metric, curve_study or study, detail_study or study)
    plots = []
    for key, heading in (PARETO, *PLOTS) if len(study.directions) > 1 else PLOTS:
        if drawn and key in drawn:
            plots.append(drawn[key])
            continue
        skip, make, caption = makers[key]
        plots.append(Plot(key, heading, note=f"Left out: {skip}.") if skip else _draw(key, heading, make, caption))
    return plots


#: A plot's maker: why it is left out (None: it is drawn), how Optuna draws it, and its caption.
Maker = tuple[str | None, Callable[[], Any], str | None]


def _plot_makers(
    study: optuna.Study, metric: str, curve_study: optuna.Study, detail_study: optuna.Study
) -> dict[str, Maker]:
    """Each plot of ``build_plots`` by key, as a ``Maker``: what it needs from the study, and Optuna's call."""
    from optuna import visualization as vis

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    with_params = [t for t in complete if t.params]
    curves = [t for t in trials if t.intermediate_values and t.state != TrialState.FAIL]
    trees = 64 if len(with_params) <= IMPORTANCE_FULL else IMPORTANCE_TREES
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=trees, seed=0)  # seeded: same study, same report
    needs_complete = f"needs a COMPLETE trial (this study has {len(complete)})"
    needs_params = needs_complete + " with parameters"
    several = len(study.directions) > 1
    # several objectives: the plots of one objective show the primary one (the first), as pruning does
    target: Any = (lambda t: t.values[0]) if several else None
    names = studies.objectives(study)
    of_sample = " of the sample" if isinstance(study, SampledStudy) else ""
    return {
        "pareto": (
            _pareto_left_out(several, len(complete), len(names)),
            lambda: vis.plot_pareto_front(study, target_names=names),
            None,
        ),
        "history": (
            None if complete else needs_complete,
            lambda: vis.plot_optimization_history(study, target=target, target_name=metric),
            None,
        ),
        "intermediate": (
            None if curves else "no trial reported intermediate values",
            lambda: _mark_pruned(vis.plot_intermediate_values(curve_study), trials),
            None,
        ),
        "importance": (
            None
            if len(with_params) >= 2
            else f"needs at least 2 COMPLETE trials with parameters (this study has {len(with_params)})",
            lambda: vis.plot_param_importances(study, evaluator=evaluator, target=target, target_name=metric),
            f"fANOVA (Optuna's FanovaImportanceEvaluator, {trees} trees, seed 0) over "
            f"{len(with_params):,} COMPLETE trials{of_sample}.",
        ),
        "parallel": (
            None if with_params else needs_params,
            lambda: vis.plot_parallel_coordinate(detail_study, target=target, target_name=metric),
            None,
        ),
        "slice": (
            None if with_params else needs_params,
            lambda: vis.plot_slice(detail_study, target=target, target_name=metric),
            None,
        ),
    }


def _pareto_left_out(several: bool, complete: int, objectives: int) -> str | None:
    """Why the Pareto front is left out, or None when it is drawn."""
    if not several:
        return "a single-objective study"
    if objectives > 3:
        return "Optuna draws 2 or 3 objectives"
    return None if complete else f"needs a COMPLETE trial (this study has {complete})"


def _draw(key: str, heading: str, make: Callable[[], Any], caption: str | None) -> Plot:
    """One of Optuna's plots as a fragment, or a note saying why Optuna could not draw it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's "experimental" and "no trials" warnings
            fig = make()
    except Exception as e:  # one plot that cannot be drawn must not cost the whole report
        reason = " ".join(str(e).split()) or type(e).__name__
        return Plot(key, heading, note=f"Left out: Optuna could not draw it ({reason}).")
    fig.update_layout(height=460, margin={"t": 60, "l": 60, "r": 30, "b": 50})
    return Plot(key, heading, html=_fragment(fig, key), caption=caption)


def _fragment(fig: Any, key: str) -> str:
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"plot-{key}",
            config={"displaylogo": False, "responsive": True},
        )
    )


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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hpo.views", "templates"),
        autoescape=True,  # HTML templates only: everything not marked Markup below is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["duration"] = format_duration
    return env


def render(
    *,
    status: StudyStatus,
    plots: Sequence[Plot],
    source: str,
    generated: dt.datetime,
    verification: Verification | None = None,
    best_config: dict[str, Any] | None = None,
    sample_note: str | None = None,
) -> str:
    """The report page (``templates/report_page.html``, autoescaped); plotly.js is inlined once.

    Every value from the study is escaped by the template. Only plotly's own output is Markup: plotly.js
    and each figure's div and script, whose JSON plotly writes with ``<``, ``>`` and ``/`` as ``\\u`` escapes
    (so a parameter name or value cannot close the script).
    """
    # The only Markup on the page, on purpose: plotly's own output (see the docstring).
    plotly = [dataclasses.replace(p, html=Markup(p.html)) if p.html is not None else p for p in plots]
    counts = status.counts
    template = _templates().get_template("report_page.html")
    return template.render(
        version=hpo.__version__,
        title=f"hpo report: {status.study}",
        plotly_js=Markup(_plotly_js()) if any(p.html for p in plots) else None,
        status=status,
        n_trials=status.n_trials,
        source=source,
        generated=generated.strftime("%Y-%m-%d %H:%M UTC"),
        by_state=", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none yet",
        ended=sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")),
        best=status.best,
        best_config=None if best_config is None else files.dumps(best_config),
        sample_note=sample_note,
        plots=plotly,
        verification=verification,
    )
