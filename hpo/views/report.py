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
from collections.abc import Callable, Sequence
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
from hpo.views.status import StudyStatus, summarize
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


def write_report(storage_url: str, study_name: str, output: str | Path) -> Path:
    """Write the report on ``study_name`` to ``output`` (atomically) and return its path.

    The study must exist (``StudyNotFoundError`` otherwise); a study with no finished trial still gets
    a report, with notes where a plot has nothing to show.
    """
    with opened(storage_url) as storage:
        study = studies.load(storage, study_name)
        metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
        direction = studies.primary_direction(study)
        trials = study.get_trials(deepcopy=False)
        plots = build_plots(study, metric)
        verification = verification_of(study.user_attrs.get(studies.ATTR_VERIFY))
        objectives, front = studies.objectives(study), studies.pareto_front(study)
    status = summarize(study_name, metric, direction, trials, objectives=objectives, front=front)
    best = studies.select_best(trials, direction)
    page = render(
        status=status,
        trials=trials,
        best=best,
        plots=plots,
        source=strip_password(storage_url),
        generated=dt.datetime.now(dt.timezone.utc),
        verification=verification,
    )
    return files.write_atomic(output, page)


def build_plots(study: optuna.Study, metric: str) -> list[Plot]:
    """Optuna's plots of ``study`` (plotly), each as an HTML fragment without plotly.js, or a note."""
    from optuna import visualization as vis

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    with_params = [t for t in complete if t.params]
    curves = [t for t in trials if t.intermediate_values and t.state != TrialState.FAIL]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same study, the same report
    needs_complete = f"needs a COMPLETE trial (this study has {len(complete)})"
    several = len(study.directions) > 1
    # several objectives: the plots of one objective show the primary one (the first), as pruning does
    target: Any = (lambda t: t.values[0]) if several else None
    names = studies.objectives(study)
    makers: dict[str, tuple[str | None, Callable[[], Any]]] = {
        "pareto": (
            None
            if several and complete and len(names) <= 3
            else "a single-objective study"
            if not several
            else "Optuna draws 2 or 3 objectives"
            if len(names) > 3
            else needs_complete,
            lambda: vis.plot_pareto_front(study, target_names=names),
        ),
        "history": (
            None if complete else needs_complete,
            lambda: vis.plot_optimization_history(study, target=target, target_name=metric),
        ),
        "intermediate": (
            None if curves else "no trial reported intermediate values",
            lambda: _mark_pruned(vis.plot_intermediate_values(study), trials),
        ),
        "importance": (
            None
            if len(with_params) >= 2
            else f"needs at least 2 COMPLETE trials with parameters (this study has {len(with_params)})",
            lambda: vis.plot_param_importances(study, evaluator=evaluator, target=target, target_name=metric),
        ),
        "parallel": (
            None if with_params else needs_complete + " with parameters",
            lambda: vis.plot_parallel_coordinate(study, target=target, target_name=metric),
        ),
        "slice": (
            None if with_params else needs_complete + " with parameters",
            lambda: vis.plot_slice(study, target=target, target_name=metric),
        ),
    }
    plots = []
    for key, heading in (PARETO, *PLOTS) if several else PLOTS:
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
    trials: Sequence[FrozenTrial],
    best: FrozenTrial | None,
    plots: Sequence[Plot],
    source: str,
    generated: dt.datetime,
    verification: Verification | None = None,
) -> str:
    """The report page (``templates/report_page.html``, autoescaped); plotly.js is inlined once.

    Every value from the study is escaped by the template. Only plotly's own output is Markup: plotly.js
    and each figure's div and script, whose JSON plotly writes with ``<``, ``>`` and ``/`` as ``\\u`` escapes
    (so a parameter name or value cannot close the script).
    """
    # The only Markup on the page, on purpose: plotly's own output (see the docstring).
    plotly = [dataclasses.replace(p, html=Markup(p.html)) if p.html is not None else p for p in plots]
    counts = status.counts
    config = None if best is None else studies.trial_train_config(best)
    template = _templates().get_template("report_page.html")
    return template.render(
        version=hpo.__version__,
        title=f"hpo report: {status.study}",
        plotly_js=Markup(_plotly_js()) if any(p.html for p in plots) else None,
        status=status,
        n_trials=len(trials),
        source=source,
        generated=generated.strftime("%Y-%m-%d %H:%M UTC"),
        by_state=", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none yet",
        ended=sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")),
        best=best,
        best_config=None if config is None else files.dumps(config),
        plots=plotly,
        verification=verification,
    )
