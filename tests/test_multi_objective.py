"""Multi-objective studies (``study.metrics``): directions per objective, pruning on the primary, the Pareto
front in status and report, export of a Pareto-optimal trial (``--pick``), and the trial's measured costs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.config import load_sweep_config
from hpo.errors import ConfigError, HpoError
from hpo.ranking import parse_pick
from tests.conftest import run_cli

MO = """
study: {name: mo, n_trials: 14, metrics: [val_acc, latency_ms], sampler: {name: tpe, seed: 1}}
pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}
search_space:
  lr: {low: 1.0e-4, high: 1.0, log: true}
  batch_size: [8, 16, 32, 64]
  dropout: {low: 0.0, high: 0.5}
train: {epochs: 5, image_size: 32}
"""


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ("{metrics: [val_acc]}", "study.metrics: lists two or more objectives"),
        ("{metrics: [val_acc, val_acc]}", "study.metrics: must not repeat an objective"),
        ("{metrics: [latency_ms, val_acc]}", "study.metrics: must start with val_acc or val_loss"),
        ("{metrics: [val_acc, speed]}", "study.metrics"),
        ("{metric: val_loss, metrics: [val_acc, latency_ms]}", "study: metric 'val_loss' is not the first of metrics"),
    ],
)
def test_bad_objectives_name_the_field(tmp_path: Path, study: str, message: str) -> None:
    (tmp_path / "c.yaml").write_text(f"study: {study}\n")
    with pytest.raises(ConfigError, match=message):
        load_sweep_config(tmp_path / "c.yaml")


def test_objectives_directions_and_latency_measurement(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(MO)
    cfg = load_sweep_config(tmp_path / "c.yaml")
    assert cfg.objectives == ["val_acc", "latency_ms"] and cfg.directions == ["maximize", "minimize"]
    assert cfg.study.metric == "val_acc" and cfg.base_train.latency_batch == 32
    (tmp_path / "one.yaml").write_text("study: {metric: val_loss}\n")
    assert load_sweep_config(tmp_path / "one.yaml").base_train.latency_batch == 0  # not measured when not asked


@pytest.mark.parametrize(
    ("text", "ok"),
    [("latency_ms<=5", True), ("latency_ms <= 5, params_m<12", True), ("speed<=5", False), ("latency_ms=5", False)],
)
def test_pick_parses_constraints_on_objectives(text: str, ok: bool) -> None:
    names = ["val_acc", "latency_ms", "params_m"]
    if ok:
        assert all(c.metric in names for c in parse_pick(text, names))
    else:
        with pytest.raises(ValueError, match="--pick"):
            parse_pick(text, names)


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_a_multi_objective_sweep_prunes_on_the_primary_and_exports_a_pareto_optimal_trial(
    tmp_path: Path, pg_url: str
) -> None:
    from hpo.progress import QuietObserver
    from hpo.sweep.run import run_sweep
    from hpo.views.export import export_best
    from hpo.views.report import write_report
    from hpo.views.studies import study_status
    from tests import workloads

    (tmp_path / "mo.yaml").write_text(MO)
    cfg = load_sweep_config(tmp_path / "mo.yaml", storage=pg_url, output_dir=str(tmp_path / "runs"), parallel=2)
    result = run_sweep(cfg, workload=workloads.synthetic_costs, observer=QuietObserver(), check_data=False)
    assert result.exit_code == 0
    study = optuna.load_study(study_name="mo", storage=pg_url)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete, [t.state for t in trials]
    from hpo.study import ATTR_CURVE, curve

    for t in trials:  # every epoch's primary metric is kept, where Optuna's TPE does not trip on it
        assert not t.intermediate_values and ATTR_CURVE in t.user_attrs
        assert sorted(curve(t)) == list(range(1, len(curve(t)) + 1))
        if t.state == TrialState.PRUNED:
            assert len(curve(t)) < 5
    for t in complete:
        assert t.values[1] == pytest.approx(0.1 * t.params["batch_size"])

    front = {t.number for t in study.best_trials}
    exported = export_best(pg_url, "mo", tmp_path / "best.yaml")
    assert exported.trial in front
    assert exported.value == max(t.values[0] for t in study.best_trials)
    picked = export_best(pg_url, "mo", tmp_path / "fast.yaml", pick="latency_ms<=1.6")
    fast = study.trials[picked.trial]
    assert picked.trial in front and fast.values[1] <= 1.6
    assert fast.values[0] == max(t.values[0] for t in study.best_trials if t.values[1] <= 1.6)
    with pytest.raises(HpoError, match="no Pareto-optimal trial"):
        export_best(pg_url, "mo", tmp_path / "none.yaml", pick="latency_ms<0.1")

    st = study_status(pg_url, "mo")
    assert {p["number"] for p in st.pareto} == front and st.objectives == ["val_acc", "latency_ms"]
    page = write_report(pg_url, "mo", tmp_path / "report.html").read_text()
    assert "Pareto front: " in page and 'id="plot-pareto"' in page

    cli = run_cli("status", "--study", "mo", "--storage", pg_url, "--json")
    assert cli.returncode == 0, cli.stderr
    assert {p["number"] for p in json.loads(cli.stdout)["pareto"]} == front
    shown = run_cli("export", "--study", "mo", "--storage", pg_url, "-o", str(tmp_path / "b.yaml"), "--pick", "speed<1")
    assert shown.returncode == 2 and "--pick: 'speed' is not an objective" in shown.stderr


def test_a_trial_measures_its_model_costs() -> None:
    from trials.config import TrainConfig
    from trials.train import fit

    base = {
        "model": "resnet18",
        "weights": None,
        "dataset": {"type": "digits", "classes": [0, 1], "max_train_samples": 40, "max_val_samples": 20},
        "image_size": 32,
        "epochs": 1,
    }
    plain = fit(TrainConfig.from_dict(base)).best_metrics
    assert plain["params_m"] == pytest.approx(11.18, abs=0.01) and "latency_ms" not in plain
    timed = fit(TrainConfig.from_dict({**base, "latency_batch": 4})).best_metrics
    assert timed["latency_ms"] > 0
