"""``hpo report``: a real study in SQLite (written with Optuna, shaped like a sweep's), the real HTML
file, and that file rendered offline in headless Chromium."""

from __future__ import annotations

import html
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from hpo import study as studies
from hpo import yamlio
from hpo.errors import StudyNotFoundError
from hpo.report import PLOTS, write_report
from hpo.status import summarize
from storage import StorageError
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
    assert yamlio.loads(html.unescape(m[1])) == studies.trial_train_config(best)

    for key, heading in PLOTS:
        assert f"<h2>{heading}</h2>" in page
        assert f'id="plot-{key}"' in page
    assert page.count("Plotly.newPlot(") == len(PLOTS)
    for title in ("Optimization History Plot", "Intermediate Values Plot", "Hyperparameter Importances"):
        assert title in page
    for n in demo.pruned:  # pruned learning curves are drawn, and marked
        assert f'"Trial{n} (pruned)"' in page
    for n in demo.complete:
        assert f'"Trial{n}"' in page

    # what the trials recorded is escaped, never markup
    assert html.escape(NASTY_REASON) in page
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


@pytest.mark.browser
def test_report_renders_offline_in_browser(report: tuple[Path, str], tmp_path: Path) -> None:
    require_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, _ = report

    def drawn(driver: object) -> int:
        plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")  # type: ignore[attr-defined]
        return sum(1 for p in plots if p.find_elements(By.CSS_SELECTOR, "svg.main-svg"))

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
