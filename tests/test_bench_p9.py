"""P9's quick pass (100 and 400 trials): every row is there, and what hpo status printed agrees with Optuna."""

from __future__ import annotations

import pytest

from benchmarks.common import Result


@pytest.mark.postgres
def test_p9_read_side_quick(pg_server: str) -> None:
    from benchmarks import p9_read_side

    result: Result = p9_read_side.run(pg_server, quick=True)
    metrics = [r.metric for r in result.rows]
    for name in ("hpo studies", "hpo status", "hpo report", "hpo report size", "growth"):
        assert any(m.startswith(name) for m in metrics), metrics
    for r in result.rows[:3]:
        assert r.comparison is not None and r.comparison.repeats >= 2
    for n in ("100", "400"):
        raw = result.raw[n]
        assert raw["status_counts"]["COMPLETE"] == int(n)
        assert raw["report_bytes"] > 0 and raw["dashboard_bytes"] > 0
    assert set(result.baselines) == {"optuna_cli", "optuna_dashboard"}


def test_status_best_is_optunas_best_trial(tmp_path: object) -> None:
    import optuna

    from benchmarks import p9_read_side
    from hpo.views.studies import study_status

    url = f"sqlite:///{tmp_path}/p9.db"
    p9_read_side.build_study(url, 500)
    st = study_status(url, p9_read_side.NAME, limit=10)
    best = optuna.load_study(study_name=p9_read_side.NAME, storage=url).best_trial
    assert st.best is not None and (st.best["number"], st.best["value"]) == (best.number, best.value)
    assert st.best["params"] == best.params and st.n_trials == 500 and len(st.rows) == 10
    assert st.rows[0].number == best.number and st.epochs_run == 500 * p9_read_side.STEPS


def test_a_large_study_is_reported_from_a_named_sample(tmp_path: object) -> None:
    import html
    import re

    import optuna

    from benchmarks import p9_read_side
    from hpo import study as studies
    from hpo.views import report

    url = f"sqlite:///{tmp_path}/p9.db"
    p9_read_side.build_study(url, 400)
    page = report.write_report(url, p9_read_side.NAME, f"{tmp_path}/r.html").read_text(encoding="utf-8")
    best = optuna.load_study(study_name=p9_read_side.NAME, storage=url).best_trial
    note = re.search(r'id="sample-note">(.*?)</p>', page, re.S)
    assert note is not None and "This study has 400 trials: the plots draw 300 of them" in html.unescape(note[1])
    assert "the parallel coordinates and slice plots 100" in html.unescape(note[1])
    parallel = page[page.index('id="plot-parallel"') : page.index('<section id="slice"')]
    assert parallel.count('"hovertemplate":"%{customdata[0]}') == report.PLOT_DETAIL  # a line per trial drawn
    assert f"Best trial: trial {best.number}" in page and "The best 100 of 400 trials" in page
    assert page.count("Plotly.newPlot(") == len(report.PLOTS) and "Left out" not in page
    assert "Best value (all trials)" in page  # hpo's own history plot: its best line is over all 400
    importance = "fANOVA (Optuna's FanovaImportanceEvaluator, 16 trees, seed 0) over 300 COMPLETE trials of the sample"
    assert importance in html.unescape(page)
    pre = re.search(r'<section id="best-config">.*?<pre>(.*?)</pre>', page, re.S)
    assert pre is not None and studies.trial_train_config(best) is not None
    assert f"lr: {best.params['lr']}" in html.unescape(pre[1]) or str(best.params["lr"])[:8] in pre[1]


#: What the read commands must not import: each costs seconds of start-up on a busy machine (Alembic: Optuna's
#: RDBStorage imports it even when the version check is skipped; the read commands do not build one).
HEAVY = ("torch", "torchvision", "ray", "plotly", "pandas", "sklearn", "matplotlib", "scipy", "alembic")


@pytest.mark.parametrize("command", [["studies"], ["status", "--study", "p9"], ["status", "--study", "p9", "--json"]])
def test_read_commands_import_nothing_heavy(tmp_path: object, command: list[str]) -> None:
    """``hpo studies`` and ``hpo status`` start fast: the real CLI entry point in a fresh process, and the
    modules loaded when it returns hold none of the heavy ones."""
    import json
    import subprocess
    import sys

    from benchmarks import p9_read_side
    from benchmarks.common import REPO

    url = f"sqlite:///{tmp_path}/p9.db"
    p9_read_side.build_study(url, 20)
    code = (
        "import json, sys\n"
        "from hpo.cli import main\n"
        f"rc = main({[*command, '--storage', url]!r})\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    got = json.loads(r.stderr.strip().splitlines()[-1])
    assert got == {"rc": 0, "heavy": []}, r.stderr[-2000:]
    assert "p9" in r.stdout
