"""``hpo report``: a real study in SQLite (written with Optuna, shaped like a sweep's), the real HTML
file, and that file rendered offline in headless Chromium."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from hpo import files
from hpo import study as studies
from hpo.errors import StudyNotFoundError
from hpo.views.report import PLOTS, write_report
from hpo.views.status import summarize
from storage import StorageError, close_storage
from tests.browser import (
    NASTY_REASON,
    DemoStudy,
    chromium,
    requested_urls,
    require_chromium,
    screenshot_path,
    severe_errors,
    write_demo_study,
)
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoStudy]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'hpo.db'}"
    return url, write_demo_study(url)


@pytest.fixture(scope="module")
def report(demo_db: tuple[str, DemoStudy], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    url, demo = demo_db
    path = write_report(url, demo.name, tmp_path_factory.mktemp("out") / "sub" / "report.html")
    return path, path.read_text(encoding="utf-8")


def outside_plotlyjs(page: str) -> str:
    """The page without the inlined plotly.js bundle (which mentions CDN URLs in code paths we never use)."""
    return page.replace(get_plotlyjs(), "")


#: Markup planted in everything a study can carry into the report: it must all come out as text.
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@dataclass(frozen=True)
class Hostile:
    path: Path
    page: str
    best_config: dict[str, Any]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    """A report on a study named ``SCRIPT``, with a metric, a parameter name, a categorical value, a fail
    reason and a training config that carry markup."""
    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'hpo.db'}"
    study = optuna.create_study(
        study_name=SCRIPT, storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.set_user_attr(studies.ATTR_METRIC, f"acc {IMG}")
    space: dict[str, BaseDistribution] = {
        SCRIPT: FloatDistribution(0.0, 1.0),
        "aug": CategoricalDistribution(["plain", IMG]),
    }
    for i in range(6):
        study.enqueue_trial({"aug": IMG if i % 2 else "plain"})
        trial = study.ask(space)
        config = {"model": f"resnet18 {IMG}", "note": SCRIPT, "epochs": 3}
        trial.set_user_attr(studies.ATTR_TRAIN_CONFIG, config)
        trial.set_user_attr(studies.ATTR_EPOCHS_RUN, 3)
        value = 0.5 + 0.1 * trial.params[SCRIPT] + (0.3 if trial.params["aug"] == IMG else 0.0)
        for epoch in (1, 2, 3):
            trial.report(value - 0.1 * (3 - epoch), epoch)
        if i == 4:
            trial.set_user_attr(studies.ATTR_FAIL_REASON, f"worker died: {IMG} {SCRIPT}")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    best = studies.select_best(study.get_trials(), "maximize")
    assert best is not None and best.params["aug"] == IMG
    close_storage(study._storage)
    path = write_report(url, SCRIPT, tmp / "report.html")
    return Hostile(path, path.read_text(encoding="utf-8"), config)


def _text(fragment: str) -> str:
    """What a browser shows of ``fragment``: its tags dropped, its entities decoded, its spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _section(page: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}"[^>]*>(.*?)</section>', page, re.S)
    assert m is not None, section_id
    return m[1]


def test_report_escapes_what_the_study_holds(hostile: Hostile) -> None:
    page = hostile.page
    for needle in (SCRIPT, IMG, "<script>alert", "<img src=x onerror", "<img"):
        assert needle not in page, needle  # anywhere, plotly.js included
    # the only scripts are plotly's: its config, its bundle, one per plot (their JSON escapes "<", ">" and "/")
    rest = outside_plotlyjs(page)
    assert rest.count("<script") == rest.count("</script>") == 2 + len(PLOTS)
    assert page.count("Plotly.newPlot(") == len(PLOTS)
    assert "\\u003cscript\\u003ealert(1)\\u003c\\u002fscript\\u003e" in page  # the parameter name, in the plots

    # ... and every hostile value is there, as text
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title is not None and html.unescape(title[1]) == f"hpo report: {SCRIPT}"
    h1 = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert h1 is not None and html.unescape(h1[1]) == f"hpo report: {SCRIPT}"
    assert f"maximize acc {IMG}" in html.unescape(page)
    best = html.unescape(_section(page, "best"))
    assert f"<th>{SCRIPT}</th>" in best and f"<th>aug</th><td>{IMG}</td>" in best
    trials = html.unescape(_section(page, "trials"))
    assert f"<th>acc {IMG}</th>" in trials
    assert f"<td>worker died: {IMG} {SCRIPT}</td>" in trials
    assert f"aug={IMG}" in trials and f"{SCRIPT}=" in trials
    pre = re.search(r"<pre>(.*?)</pre>", _section(page, "best-config"), re.S)
    assert pre is not None and files.loads(html.unescape(pre[1])) == hostile.best_config


def test_report_is_one_offline_file(report: tuple[Path, str]) -> None:
    path, page = report
    assert path.name == "report.html" and path.parent.name == "sub"
    assert page.count(get_plotlyjs()) == 1  # inlined, once
    rest = outside_plotlyjs(page)
    assert len(rest) < 200_000
    for needle in ("https://cdn", "<script src", "<link", "@import", "http://", "https://"):
        assert needle not in rest, needle
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # written atomically: no temp file left


def test_report_content(report: tuple[Path, str], demo_db: tuple[str, DemoStudy]) -> None:
    url, demo = demo_db
    _, page = report
    study = optuna.load_study(study_name=demo.name, storage=url)
    trials = study.get_trials()
    status = summarize(demo.name, "val_acc", "maximize", trials)
    text = html.unescape(re.sub(r"<[^>]+>", " ", outside_plotlyjs(page)))
    text = " ".join(text.split())

    assert f"<title>hpo report: {demo.name}</title>" in page
    assert "maximize val_acc" in text
    assert "7 complete, 3 pruned, 2 fail" in text
    assert f"Best trial: trial {demo.best_number}" in text
    assert f"{demo.best_value:.6g} trial {demo.best_number}" in text
    best = next(t for t in trials if t.number == demo.best_number)
    for name, value in best.params.items():
        assert f"{name} {value:.6g}" in text if isinstance(value, float) else f"{name} {value}" in text
    # compute saved, the same numbers hpo status prints
    assert status.epochs_saved > 0
    assert f"EPOCHS RUN {status.epochs_run} of a {status.epochs_budget}-epoch budget".lower() in text.lower()
    assert f"{status.saved_fraction:.0%}" in text and f"{status.epochs_saved} epochs saved" in text

    # the best config is the best trial's train_config, as YAML that loads back
    m = re.search(r'<section id="best-config">.*?<pre>(.*?)</pre>', page, re.S)
    assert m is not None
    assert files.loads(html.unescape(m[1])) == studies.trial_train_config(best)

    for key, heading in PLOTS:
        assert f"<h2>{heading}</h2>" in page
        assert f'id="plot-{key}"' in page
    assert page.count("Plotly.newPlot(") == len(PLOTS)
    for title in ("Optimization History Plot", "Intermediate Values Plot", "Hyperparameter Importances"):
        assert title in page
    # the importances say how they were estimated: Optuna's default 64-tree fANOVA for a small study
    assert "fANOVA (Optuna's FanovaImportanceEvaluator, 64 trees, seed 0) over 7 COMPLETE trials." in text
    for n in demo.pruned:  # pruned learning curves are drawn, and marked
        assert f'"Trial{n} (pruned)"' in page
    for n in demo.complete:
        assert f'"Trial{n}"' in page

    # what the trials recorded is escaped, never markup
    assert NASTY_REASON in html.unescape(page)
    assert "<script>alert(" not in page


def _sparse_study(url: str, name: str) -> None:
    study = optuna.create_study(study_name=name, storage=url, direction="minimize")
    study.set_user_attr(studies.ATTR_METRIC, "val_loss")
    dist: dict[str, BaseDistribution] = {"lr": FloatDistribution(1e-4, 0.1, log=True)}
    t = study.ask(dist)
    for step in (1, 2, 3):
        t.report(1.0 / step, step)
    study.tell(t, 0.33)
    t = study.ask(dist)
    t.report(2.0, 1)
    study.tell(t, state=TrialState.PRUNED)


def test_sparse_study_gets_notes_not_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _sparse_study(url, "sparse")
    optuna.create_study(study_name="empty", storage=url)

    page = write_report(url, "sparse", tmp_path / "sparse.html").read_text(encoding="utf-8")
    assert "minimize val_loss" in page
    assert "Left out: needs at least 2 COMPLETE trials with parameters (this study has 1)." in page
    assert 'id="plot-importance"' not in page
    assert page.count("Plotly.newPlot(") == len(PLOTS) - 1
    assert "Trial 0 records no training config" in page
    assert '"Trial1 (pruned)"' in page

    page = write_report(url, "empty", tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot(" not in page and get_plotlyjs() not in page  # nothing to draw: no 4.8 MB of JS
    assert page.count("Left out:") == len(PLOTS)
    assert "None yet: the study has no COMPLETE trial." in page


def test_unknown_study_and_missing_storage(tmp_path: Path, demo_db: tuple[str, DemoStudy]) -> None:
    url, demo = demo_db
    out = tmp_path / "report.html"
    with pytest.raises(StudyNotFoundError) as e:
        write_report(url, "nope", out)
    assert str(e.value) == f"study 'nope' not found (studies in this storage: {demo.name})"
    with pytest.raises(StorageError, match="no such file"):
        write_report(f"sqlite:///{tmp_path / 'missing.db'}", demo.name, out)
    assert not out.exists() and not (tmp_path / "missing.db").exists()


def drawn(driver: Any) -> int:
    """How many plots plotly has drawn on the page."""
    from selenium.webdriver.common.by import By

    plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    return sum(1 for p in plots if p.find_elements(By.CSS_SELECTOR, "svg.main-svg"))


@pytest.mark.browser
def test_report_renders_offline_in_browser(report: tuple[Path, str], tmp_path: Path) -> None:
    require_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, _ = report

    with chromium(tmp_path / "profile") as driver:
        driver.get(path.as_uri())
        WebDriverWait(driver, 60).until(lambda d: drawn(d) == len(PLOTS))
        assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == len(PLOTS)
        # the learning curves have one line per trial with intermediate values (FAIL ones aside)
        curves = driver.find_elements(By.CSS_SELECTOR, "#plot-intermediate .scatterlayer .trace")
        assert len(curves) >= 10
        assert severe_errors(driver) == []
        network = [u for u in requested_urls(driver) if u.startswith(("http:", "https:", "ws:", "wss:"))]
        assert network == []  # it asked the network for nothing
        driver.set_window_size(1400, 1800)
        driver.execute_script("window.dispatchEvent(new Event('resize'));")
        WebDriverWait(driver, 10).until(lambda d: drawn(d) == len(PLOTS))
        driver.save_screenshot(str(screenshot_path("report.png", tmp_path)))


@pytest.mark.browser
def test_hostile_study_renders_as_text_in_browser(hostile: Hostile, tmp_path: Path) -> None:
    require_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium(tmp_path / "profile") as driver:
        # record alert() instead of opening a dialog, from before the page's first script runs
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": "window.__alerts = []; window.alert = (m) => { window.__alerts.push(String(m)); };"},
        )
        driver.get(hostile.path.as_uri())
        WebDriverWait(driver, 60).until(lambda d: drawn(d) == len(PLOTS))
        assert driver.execute_script("return window.__alerts") == []
        assert driver.title == f"hpo report: {SCRIPT}"
        assert driver.find_element(By.TAG_NAME, "h1").text == f"hpo report: {SCRIPT}"
        assert driver.find_element(By.CSS_SELECTOR, "#best th").text == SCRIPT
        cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#trials td")]
        assert f"worker died: {IMG} {SCRIPT}" in cells
        assert driver.find_elements(By.TAG_NAME, "img") == []
        assert len(driver.find_elements(By.TAG_NAME, "script")) == 2 + len(PLOTS)
        assert severe_errors(driver) == []


def test_cli_report(demo_db: tuple[str, DemoStudy], tmp_path: Path) -> None:
    if run_cli("report", "--help", timeout=60).returncode != 0:
        pytest.skip("`hpo report` is not wired into the CLI yet (hpo report --help failed)")
    url, demo = demo_db
    out = tmp_path / "r.html"
    r = run_cli("report", "--study", demo.name, "--storage", url, "-o", str(out), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(out) in r.stdout
    assert out.read_text(encoding="utf-8").count("Plotly.newPlot(") == len(PLOTS)

    r = run_cli("report", "--study", "nope", "--storage", url, "-o", str(tmp_path / "x.html"), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: study 'nope' not found (studies in this storage: {demo.name})"
    assert not (tmp_path / "x.html").exists()
