"""Shared by the dashboard and report tests: headless Chromium (the system's chromium and chromedriver,
never a downloaded one) and the finished study both of them show.

``require_chromium()`` skips a test when either binary is missing (fails under CI=true, like
``pg_server``); ``chromium(profile_dir)`` starts a fresh, isolated session; ``write_demo_study`` writes
a study shaped like one a sweep leaves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, REPO

CHROMIUM = Path(os.environ.get("HPO_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("HPO_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
DOCS = REPO / "docs"

_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def require_chromium() -> None:
    """Skip (or, under CI=true, fail) unless the system chromium, chromedriver and selenium are there."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator[Any]:
    """A headless Chromium session with its own profile folder and the browser console log captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*_ARGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # An explicit driver path: selenium must never go looking for (or download) a browser or driver.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def severe_errors(driver: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """Console messages at level SEVERE (uncaught errors, failed loads) not matching ``ignore``."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e.get("level") == "SEVERE" and not any(i in e["message"] for i in ignore)
    ]


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked the network stack for, from Chromium's performance log."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """``docs/<name>`` when HPO_WRITE_DOCS=1 (to refresh the committed screenshots), else under ``tmp_path``."""
    if os.environ.get("HPO_WRITE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


@dataclass(frozen=True)
class DemoStudy:
    """What ``write_demo_study`` wrote, for the assertions."""

    name: str
    study_id: int
    best_number: int
    best_value: float
    complete: list[int]
    pruned: list[int]
    failed: list[int]


#: A fail reason with markup in it: every page that shows it must escape it.
NASTY_REASON = "worker died: <script>alert('x')</script> & more"


def write_demo_study(storage_url: str, name: str = "digits-demo") -> DemoStudy:
    """A finished study shaped like one ``hpo sweep`` leaves, written with Optuna directly: 12 trials of
    fine-tuning (7 COMPLETE, 3 PRUNED after 2 epochs, 2 FAIL), per-epoch intermediate values and the
    user attrs hpo sets (train_config, epochs_run, stop_reason, duration_s, fail_reason...)."""
    import math

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from hpo import study as studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage_url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    study.set_user_attr(studies.ATTR_HPO_VERSION, "0.1.0")
    space = {
        "lr": FloatDistribution(1e-4, 0.3, log=True),
        "batch_size": CategoricalDistribution([32, 64]),
        "aug_strength": FloatDistribution(0.0, 0.5),
    }
    epochs = 6
    complete: list[int] = []
    pruned: list[int] = []
    failed: list[int] = []
    for i in range(12):
        trial = study.ask(space)
        p = trial.params
        trial.set_user_attr(
            studies.ATTR_TRAIN_CONFIG,
            {
                "model": "resnet18",
                "weights": None,
                "dataset": {"type": "digits", "classes": [5, 6, 7, 8, 9]},
                "epochs": epochs,
                "lr": p["lr"],
                "batch_size": p["batch_size"],
                "aug_strength": p["aug_strength"],
                "early_stopping": {"patience": 2},
            },
        )
        trial.set_user_attr(studies.ATTR_ATTEMPT, 1)
        trial.set_user_attr(studies.ATTR_CHECKPOINT_DIR, f"runs/{name}/trial-{trial.number:05d}")
        # best near lr=3e-3, a little worse with more augmentation
        final = 0.97 - 0.12 * abs(math.log10(p["lr"]) + 2.5) - 0.05 * p["aug_strength"]
        if i in (5, 9):
            n_epochs = 1
        elif i in (3, 7, 10):
            n_epochs = 2
        else:
            n_epochs = epochs
        curve = [final - 0.3 * 0.5**e for e in range(n_epochs)]
        for e, v in enumerate(curve, start=1):
            trial.report(v, e)
        trial.set_user_attr(studies.ATTR_EPOCHS_RUN, n_epochs)
        trial.set_user_attr(studies.ATTR_DURATION, 4.0 * n_epochs)
        if i in (5, 9):
            reason = NASTY_REASON if i == 5 else "CUDA out of memory"
            trial.set_user_attr(studies.ATTR_FAIL_REASON, reason)
            study.tell(trial, state=TrialState.FAIL)
            failed.append(trial.number)
        elif i in (3, 7, 10):
            trial.set_user_attr(studies.ATTR_STOP_REASON, "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            pruned.append(trial.number)
        else:
            trial.set_user_attr(studies.ATTR_STOP_REASON, "completed")
            trial.set_user_attr(studies.ATTR_BEST_EPOCH, n_epochs)
            trial.set_user_attr(studies.ATTR_METRICS, {"val_acc": max(curve), "val_loss": 1.0 - max(curve)})
            study.tell(trial, max(curve))
            complete.append(trial.number)
    best = studies.select_best(study.get_trials(deepcopy=False), "maximize")
    assert best is not None and best.value is not None
    study_id = study._study_id
    from storage import close_storage

    close_storage(study._storage)
    return DemoStudy(name, study_id, best.number, best.value, complete, pruned, failed)
