"""End to end through the real CLI: real fine-tuning trials on a real local Ray, the study in a real
PostgreSQL, export, production training, and stock Optuna reading the study."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.config import load_sweep_config, load_train_file
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow]

SECRET = "Pl4nted-S3cret"


def with_password(url: str) -> str:
    """The test server trusts local connections, so a planted password still connects: it must never be shown."""
    return sqlalchemy.engine.make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def quickstart_config(path: Path, weights: Path, *, name: str, n_trials: int, epochs: int = 4, extra: str = "") -> Path:
    """The quickstart workload, made smaller: fine-tune the digits 0-4 backbone on digits 5-9.

    Half the learning rates diverge (lr 5.0 stays at chance), so there is always something to prune once
    one good trial has finished; patience 3 keeps early stopping from ending those runs first.
    """
    path.write_text(
        f"""
study: {{name: {name}, n_trials: {n_trials}, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: [1.0e-3, 5.0]
  batch_size: [32, 64]
pruner: {{n_startup_trials: 1, n_warmup_steps: 1}}
early_stopping: {{patience: 3}}
train:
  model: resnet18
  weights: {weights}
  dataset: {{type: digits, classes: [5, 6, 7, 8, 9], max_train_samples: 200, max_val_samples: 100}}
  epochs: {epochs}
{extra}"""
    )
    return path


def _finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.postgres
def test_sweep_export_train_on_postgres(tmp_path: Path, pg_url: str, pretrained: Path, peak_connections: type) -> None:
    """One real sweep (4 trials at once on 2 CPUs), then everything a user does with it: status, studies,
    export, production training, stock Optuna reading the study. (Connection bounds at 2, 4 and 8 trials at
    once: tests/test_sweep.py.)"""
    url = with_password(pg_url)
    n_trials, parallel = 12, 4
    extra = "resources: {cpus_per_trial: 0.5}\n"
    cfg = quickstart_config(tmp_path / "cfg.yaml", pretrained, name="qs", n_trials=n_trials, extra=extra)
    with peak_connections(pg_url) as peak:
        r = run_cli("sweep", str(cfg), "--storage", url, "--parallel", str(parallel), "--no-progress", cwd=tmp_path)
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    assert SECRET not in output
    assert 1 <= peak.peak <= 4, f"peak connections {peak.peak}"

    trials = optuna.load_study(study_name="qs", storage=pg_url).get_trials()
    finished = _finished(trials)
    assert len(finished) == n_trials
    states = {t.state for t in finished}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}, states
    for t in finished:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        assert t.user_attrs["epochs_run"] == len(steps)
        if t.state == TrialState.PRUNED:
            assert len(steps) < 4
    finished_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("trial ")]
    assert len(finished_lines) == n_trials  # one line per finished trial when stdout is not a TTY

    # status numbers match the study
    st = run_cli("status", "--study", "qs", "--storage", url, "--json")
    assert st.returncode == 0 and SECRET not in st.stdout + st.stderr
    status = json.loads(st.stdout)
    assert status["counts"]["COMPLETE"] == sum(t.state == TrialState.COMPLETE for t in trials)
    assert status["counts"]["PRUNED"] == sum(t.state == TrialState.PRUNED for t in trials)
    assert status["epochs_run"] == sum(len(t.intermediate_values) for t in trials)
    best = optuna.load_study(study_name="qs", storage=pg_url).best_trial
    assert status["best"]["number"] == best.number
    studies = run_cli("studies", "--storage", url, "--json")
    assert [s["study"] for s in json.loads(studies.stdout)] == ["qs"]

    # export -> reload -> production training
    ex = run_cli("export", "--study", "qs", "--storage", url, "-o", str(tmp_path / "best.yaml"))
    assert ex.returncode == 0, ex.stderr
    text = (tmp_path / "best.yaml").read_text()
    assert SECRET not in text and SECRET not in ex.stdout + ex.stderr
    doc = load_train_file(tmp_path / "best.yaml")
    assert doc.provenance is not None and doc.provenance.trial == best.number
    assert doc.provenance.value == pytest.approx(best.value)
    assert doc.train.lr == pytest.approx(best.params["lr"]) and doc.train.batch_size == best.params["batch_size"]
    assert doc.provenance.storage.startswith("postgresql+psycopg2://postgres@")

    tr = run_cli("train", str(tmp_path / "best.yaml"), "--output", str(tmp_path / "prod"), timeout=600)
    assert tr.returncode == 0, tr.stdout + tr.stderr
    metrics = json.loads((tmp_path / "prod" / "metrics.json").read_text())
    assert metrics["metric"] == "val_acc" and 0.0 <= metrics["value"] <= 1.0
    assert metrics["tuned_value"] == pytest.approx(best.value)
    assert f"tuned trial: {best.value:.4f}" in tr.stdout
    assert (tmp_path / "prod" / "model.pt").is_file()

    # stock Optuna reads the study
    optuna_cli = Path(sys.executable).parent / "optuna"
    ob = subprocess.run(
        [str(optuna_cli), "best-trial", "--study-name", "qs", "--storage", pg_url, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ob.returncode == 0, ob.stderr
    assert json.loads(ob.stdout)["number"] == best.number


def test_unreadable_images_stop_the_sweep_at_the_first_trial_naming_the_file(tmp_path: Path, pretrained: Path) -> None:
    """Unreadable images pass the cheap pre-flight (``validate`` without --deep) but would fail every trial the
    same way: the sweep stops at the first, names the file, spends no failure budget on copies, exits 1."""
    from PIL import Image

    for cls in ("cats", "dogs"):
        d = tmp_path / "data" / cls
        d.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(d / f"{i}.png")
            (d / f"broken{i}.jpg").write_bytes(b"not an image")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "study: {name: broken, n_trials: 5}\nmax_failures: 3\nparallel: 1\n"
        f"train: {{weights: {pretrained}, epochs: 2, dataset: {{type: imagefolder, path: {tmp_path / 'data'}}}}}\n"
    )
    r = run_cli("sweep", str(cfg), "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    stop = next(line for line in r.stdout.splitlines() if line.startswith("stopping:"))
    assert re.search(r"unreadable image \S+/broken\d\.jpg", stop) and "not the hyperparameters' fault" in stop
    assert "Traceback" not in r.stdout + r.stderr
    trials = optuna.load_study(study_name="broken", storage=f"sqlite:///{tmp_path / 'b.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL]  # the first trial, and no copies
    assert trials[0].user_attrs["fail_kind"] == "environment" and "broken" in trials[0].user_attrs["fail_reason"]


def test_the_examples_run_as_shipped(tmp_path: Path) -> None:
    """examples/quickstart.yaml with its real pretraining step (HOME isolated), shortened to 2 trials."""
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    pre = run_cli(
        "train",
        str(REPO / "examples" / "pretrain_digits04.yaml"),
        "--output",
        str(home / ".cache/hpo/pretrained/resnet18-digits04"),
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert pre.returncode == 0, pre.stdout + pre.stderr
    r = run_cli(
        "sweep", str(REPO / "examples" / "quickstart.yaml"), "--n-trials", "2", "--no-progress", env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "hpo.db").is_file()  # the embedded default
    ex = run_cli("export", "--study", "quickstart", "-o", "best.yaml", env=env, cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr
    assert load_train_file(tmp_path / "best.yaml").train.dataset.classes == (5, 6, 7, 8, 9)
    # the ImageFolder example differs in data and weights only; it validates as it is
    images = tmp_path / "data" / "flowers"
    for cls in ("daisy", "rose"):
        (images / cls).mkdir(parents=True)
    cfg = load_sweep_config(REPO / "examples" / "imagefolder.yaml", **{"train.dataset.path": str(images)})
    assert cfg.train.weights == "IMAGENET1K_V1" and cfg.train.dataset.type == "imagefolder"
    shutil.rmtree(home)
