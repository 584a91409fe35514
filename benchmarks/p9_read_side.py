"""P9: the read side at 10,000 trials: ``hpo studies``, ``hpo status`` and ``hpo report`` against the stock
``optuna studies`` CLI and optuna-dashboard's study API at first load.

Studies of 100, 1,000 and 10,000 COMPLETE trials x 20 intermediate steps are created with Optuna and then
filled by bulk INSERTs into Optuna's own tables (SQLAlchemy Core): the 5 default hyperparameters as params
(with their distributions) and the user attrs an hpo sweep writes (train_config, epochs_run, duration_s,
stop_reason, best_epoch, metrics, node, queued_s, attempt, checkpoint_dir). Each size has a database of its
own (one study in it, so ``studies`` lists that one). Every timing is of the real command as a subprocess
(process start and imports included, as a user waits for it); the dashboard is started once per size and
its ``GET /api/studies/<id>`` timed at first load (a fresh server each repeat: it caches trials).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    Comparison,
    Result,
    Row,
    fmt_ratio,
    fresh_database,
    insert_complete_trials,
    interleaved,
    median,
    quiet_optuna,
    secs,
)
from storage import close_storage, open_storage

STEPS = 20
NAME = "p9"
METRIC = "val_acc"
GOAL_STATUS_S = 1.0  # hpo studies, hpo status at 10,000 trials
GOAL_REPORT_S = 15.0
GOAL_REPORT_BYTES = 5_000_000  # 5 MB (decimal): plotly.js, inlined, is 4.82 MB of it
BIN = Path(sys.executable).parent


def _space() -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "batch_size": CategoricalDistribution([16, 32, 64, 128]),
        "dropout": FloatDistribution(0.0, 0.5),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "aug_strength": FloatDistribution(0.0, 1.0),
    }


def build_study(url: str, n_trials: int, seed: int = 0) -> float:
    """Study ``NAME`` in ``url`` with ``n_trials`` COMPLETE trials shaped like an hpo sweep's; seconds taken."""
    import optuna
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    from hpo import study as studies

    start = time.perf_counter()
    rng = random.Random(seed)
    space = _space()
    dists = {k: distribution_to_json(d) for k, d in space.items()}
    storage = open_storage(url, create_schema=True)
    try:
        study = optuna.create_study(study_name=NAME, storage=storage, direction="maximize")
        study.set_user_attr(studies.ATTR_METRIC, METRIC)
        study.set_user_attr(studies.ATTR_HPO_VERSION, "bench")
        sid = study._study_id
        t0 = datetime.datetime(2026, 11, 1)
        fin_iv = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
        fin_v = models.TrialValueModel.TrialValueType.FINITE
        with storage.engine.begin() as conn:
            for first in range(0, n_trials, 1000):
                numbers = range(first, min(first + 1000, n_trials))
                ids = insert_complete_trials(
                    conn,
                    sid,
                    numbers,
                    lambda n: (t0 + datetime.timedelta(seconds=60 * n), t0 + datetime.timedelta(seconds=60 * n + 55)),
                )
                ivs, values, params, attrs = [], [], [], []
                for number, tid in zip(numbers, ids, strict=True):
                    p = {
                        "lr": 10 ** rng.uniform(-5, -1),
                        "batch_size": rng.choice([16, 32, 64, 128]),
                        "dropout": rng.uniform(0.0, 0.5),
                        "weight_decay": 10 ** rng.uniform(-6, -2),
                        "aug_strength": rng.uniform(0.0, 1.0),
                    }
                    quality = 0.95 - 0.1 * abs(p["lr"] - 1e-3) * 100 - 0.2 * p["dropout"] + rng.gauss(0, 0.02)
                    curve = [quality * (1 - 0.5 ** (s / 3)) + rng.gauss(0, 0.005) for s in range(1, STEPS + 1)]
                    best = max(range(STEPS), key=lambda i: curve[i])
                    ivs += [
                        {"trial_id": tid, "step": s, "intermediate_value": v, "intermediate_value_type": fin_iv}
                        for s, v in enumerate(curve, start=1)
                    ]
                    values.append({"trial_id": tid, "objective": 0, "value": curve[best], "value_type": fin_v})
                    params += [
                        {
                            "trial_id": tid,
                            "param_name": k,
                            "param_value": space[k].to_internal_repr(v),
                            "distribution_json": dists[k],
                        }
                        for k, v in p.items()
                    ]
                    user = {
                        studies.ATTR_TRAIN_CONFIG: {"model": "resnet18", "epochs": STEPS, "image_size": 64, **p},
                        studies.ATTR_CHECKPOINT_DIR: f"runs/p9/trial-{number:05d}",
                        studies.ATTR_ATTEMPT: 1,
                        studies.ATTR_STOP_REASON: "completed",
                        studies.ATTR_EPOCHS_RUN: STEPS,
                        studies.ATTR_BEST_EPOCH: best + 1,
                        studies.ATTR_METRICS: {METRIC: curve[best], "val_loss": 1 - curve[best]},
                        studies.ATTR_DURATION: 55.0,
                        studies.ATTR_QUEUED: 0.01,
                        studies.ATTR_NODE: {"node_id": "n0", "host": "bench", "pid": 1000 + number % 2},
                    }
                    attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in user.items()]
                conn.execute(models.TrialIntermediateValueModel.__table__.insert(), ivs)
                conn.execute(models.TrialValueModel.__table__.insert(), values)
                conn.execute(models.TrialParamModel.__table__.insert(), params)
                conn.execute(models.TrialUserAttributeModel.__table__.insert(), attrs)
    finally:
        close_storage(storage)
    return time.perf_counter() - start


def _cli(*args: str) -> tuple[float, str]:
    """Seconds the command took (a fresh process, as a user runs it) and its stdout; raises on failure."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    r = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return took, r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _dashboard(url: str) -> Iterator[str]:
    """optuna-dashboard on ``url`` (its own CLI, default server), until it answers; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "optuna-dashboard"), url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=30).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("optuna-dashboard did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def dashboard_first_load(url: str, study_id: int) -> tuple[float, int]:
    """Seconds and bytes of ``GET /api/studies/<id>`` on a freshly started dashboard (its first load)."""
    with _dashboard(url) as base:
        start = time.perf_counter()
        body = urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=900).read()
        return time.perf_counter() - start, len(body)


def _study_id(url: str) -> int:
    import optuna

    storage = open_storage(url, create_schema=False)
    try:
        return int(optuna.load_study(study_name=NAME, storage=storage)._study_id)
    finally:
        close_storage(storage)


def measure(url: str, n: int, repeats: int, out_dir: Path) -> dict[str, Any]:
    """Every command at one study size: hpo vs its stock equivalent, interleaved ``repeats`` times."""
    hpo = str(BIN / "hpo")
    report = out_dir / f"report-{n}.html"
    studies_cmp = interleaved(
        lambda: _cli(hpo, "studies", "--storage", url)[0],
        lambda: _cli(str(BIN / "optuna"), "studies", "--storage", url)[0],
        repeats,
    )
    sid = _study_id(url)
    dash: list[tuple[float, int]] = []

    def dashboard() -> float:
        dash.append(dashboard_first_load(url, sid))
        return dash[-1][0]

    status_cmp = interleaved(lambda: _cli(hpo, "status", "--study", NAME, "--storage", url)[0], dashboard, repeats)
    report_cmp = interleaved(
        lambda: _cli(hpo, "report", "--study", NAME, "--storage", url, "-o", str(report))[0], dashboard, repeats
    )
    _, status_json = _cli(hpo, "status", "--study", NAME, "--storage", url, "--json")
    return {
        "studies": studies_cmp,
        "status": status_cmp,
        "report": report_cmp,
        "report_bytes": report.stat().st_size,
        "dashboard_bytes": dash[-1][1],
        "status_json": json.loads(status_json),
    }


def run(admin_url: str, quick: bool = False) -> Result:
    import optuna

    quiet_optuna()
    sizes = (100, 400) if quick else (100, 1_000, 10_000)  # quick: past the report's 300-trial sample
    repeats = {100: 2, 400: 2, 1_000: 3, 10_000: 5}
    res = Result("P9", "The read side: hpo studies, status and report against optuna studies and optuna-dashboard")
    res.settings = {"sizes": list(sizes), "steps": STEPS, "params": 5, "repeats": {str(n): repeats[n] for n in sizes}}
    res.baselines = {
        "optuna_cli": {"command": "optuna studies --storage URL", "version": optuna.__version__},
        "optuna_dashboard": {"request": "GET /api/studies/<id>", "server": "default", "first_load": True},
    }
    got: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            with fresh_database(admin_url, f"p9_{n}") as url:
                built = build_study(url, n)
                got[n] = {"build_s": built, **measure(url, n, repeats[n], Path(tmp))}
    res.raw = {
        str(n): {
            "build_s": g["build_s"],
            "studies": g["studies"].as_dict(),
            "status": g["status"].as_dict(),
            "report": g["report"].as_dict(),
            "report_bytes": g["report_bytes"],
            "dashboard_bytes": g["dashboard_bytes"],
            "status_best": g["status_json"]["best"],
            "status_counts": g["status_json"]["counts"],
        }
        for n, g in got.items()
    }
    top, low = max(sizes), min(sizes)
    g, g0 = got[top], got[low]

    def grow(key: str) -> str:
        return fmt_ratio(median(g[key].hpo) / median(g0[key].hpo))

    def row(metric: str, key: str, goal_s: float, vs: str) -> Row:
        c: Comparison = g[key]
        return Row(
            f"{metric} at {top:,} trials (vs {vs})",
            f"<= {goal_s:g} s",
            secs(median(c.hpo)),
            secs(median(c.baseline)),
            c.fmt_ratio(),
            median(c.hpo) <= goal_s,
            comparison=c,
        )

    res.rows = [
        row("hpo studies", "studies", GOAL_STATUS_S, "optuna studies"),
        row("hpo status", "status", GOAL_STATUS_S, "dashboard API, first load"),
        row("hpo report", "report", GOAL_REPORT_S, "dashboard API, first load"),
        Row(
            f"hpo report size at {top:,} trials (vs dashboard API JSON)",
            f"<= {GOAL_REPORT_BYTES / 1e6:g} MB",
            f"{g['report_bytes'] / 1e6:.2f} MB",
            f"{g['dashboard_bytes'] / 1e6:.2f} MB",
            fmt_ratio(g["report_bytes"] / g["dashboard_bytes"]),
            g["report_bytes"] <= GOAL_REPORT_BYTES,
        ),
        Row(
            f"growth {low:,} -> {top:,} trials: studies / status / report",
            "info",
            f"{grow('studies')} / {grow('status')} / {grow('report')}",
            f"{fmt_ratio(median(g['studies'].baseline) / median(g0['studies'].baseline))} (optuna studies) / "
            f"{fmt_ratio(median(g['status'].baseline) / median(g0['status'].baseline))} (dashboard)",
            "",
            None,
        ),
    ]
    res.notes = [
        f"Studies of {', '.join(f'{n:,}' for n in sizes)} COMPLETE trials x {STEPS} steps, 5 params and hpo's user "
        "attrs, bulk-inserted into a fresh PostgreSQL database each; every time is the real command as a "
        "subprocess (start-up and imports included), hpo and the baseline interleaved.",
        "hpo studies and status open one plain database connection (not Optuna's RDBStorage, whose version manager "
        "imports Alembic), read counts, the best and the compute totals by SQL aggregates over Optuna's tables and "
        "load params for the shown rows only; the report draws a sample past 300 trials (300 points, 100 learning "
        "curves, 100 lines in the parallel coordinates and slice plots, the best 100 trials in its table) and says "
        "so in its text, and estimates "
        "parameter importances with Optuna's fANOVA, 64 trees up to 100 trials and 16 past that (named on the "
        "page); the read commands skip Optuna's schema-version check.",
        "The report inlines plotly.js (4.82 MB of it); the size goal is 5,000,000 bytes.",
        "Per size (hpo studies / status / report): "
        + "; ".join(
            f"{n:,}: {secs(median(got[n]['studies'].hpo))} / {secs(median(got[n]['status'].hpo))} / "
            f"{secs(median(got[n]['report'].hpo))}, report {got[n]['report_bytes'] / 1e6:.2f} MB"
            for n in sizes
        ),
    ]
    return res
