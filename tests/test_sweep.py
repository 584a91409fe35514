"""The sweep loop against a real PostgreSQL and a real local Ray, with a fast synthetic workload
(real functions on real Ray workers, reporting through the real coordinator)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config import SweepConfig, load_sweep_config
from hpo.coordinator.settings import CoordinatorSettings
from hpo.progress import QuietObserver
from hpo.sweep import run_sweep
from tests import workloads

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("ray_local")]


def _cfg(tmp_path: Path, url: str, text: str, **overrides: object) -> SweepConfig:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_sweep_config(path, storage=url, output_dir=str(tmp_path / "runs"), **overrides)


BASE = """
study: {name: s, n_trials: 12, sampler: {name: tpe, seed: 3}}
pruner: {n_startup_trials: 3, n_warmup_steps: 1}
search_space:
  lr: {low: 1.0e-4, high: 1.0, log: true}
train: {epochs: 5, image_size: 32}
"""


def _settings(url: str, name: str, lease: dict | None = None) -> CoordinatorSettings:
    return CoordinatorSettings(
        storage_url=url,
        study_name=name,
        metric="val_acc",
        direction="maximize",
        distributions={},
        base_config={},
        fixed_params={},
        checkpoint_root="/tmp/unused",
        lease=lease,
    )


def _run(cfg: SweepConfig, workload: object = workloads.synthetic) -> object:
    return run_sweep(cfg, workload=workload, observer=QuietObserver(), check_data=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("parallel", [2, 4, 8])
def test_sweep_prunes_records_each_epoch_and_bounds_connections(
    tmp_path: Path, pg_url: str, peak_connections: type, parallel: int
) -> None:
    cfg = _cfg(tmp_path, pg_url, BASE + "resources: {cpus_per_trial: 0.25}\n", parallel=parallel)
    with peak_connections(pg_url) as peak:
        result = _run(cfg)
    assert result.exit_code == 0 and result.stopped == "target reached"
    study = optuna.load_study(study_name="s", storage=pg_url)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 12
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states
    for t in trials:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1)), t.number
        if t.state == TrialState.COMPLETE:
            assert len(steps) == 5
            assert t.value == max(t.intermediate_values.values())
            assert t.user_attrs["train_config"]["lr"] == t.params["lr"]
        else:
            assert len(steps) < 5
        assert 0 <= t.user_attrs["queued_s"] < math.inf, t.user_attrs  # submission to the task starting on a worker
    assert peak.samples > 10
    assert 1 <= peak.peak <= 4, peak.peak


def test_resume_continues_to_the_new_target_with_unique_numbers(tmp_path: Path, pg_url: str) -> None:
    assert _run(_cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 4})).exit_code == 0
    again = _run(_cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 8}))
    assert again.launched == 4
    trials = optuna.load_study(study_name="s", storage=pg_url).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    nothing = _run(_cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 8}))
    assert nothing.stopped == "nothing to do" and nothing.launched == 0


def test_a_trial_that_kills_its_process_fails_with_a_reason_and_the_sweep_goes_on(tmp_path: Path, pg_url: str) -> None:
    text = BASE.replace("search_space:\n", "search_space:\n  seed: [0, 1]\n") + "max_failures: 50\n"
    result = _run(_cfg(tmp_path, pg_url, text, **{"study.n_trials": 6}), workloads.exit_when_told)
    assert result.exit_code == 0
    trials = optuna.load_study(study_name="s", storage=pg_url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert failed, "the sampler never picked seed 1"
    for t in failed:
        assert t.params["seed"] == 1
        assert t.user_attrs["fail_reason"].startswith("worker died"), t.user_attrs
    assert all(t.params["seed"] == 0 for t in finished)
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_past_the_failure_budget_the_sweep_stops_with_exit_1(tmp_path: Path, pg_url: str) -> None:
    text = BASE.replace("search_space:\n", "search_space:\n  seed: 1\n") + "max_failures: 2\nparallel: 1\n"
    result = _run(_cfg(tmp_path, pg_url, text), workloads.exit_when_told)
    assert result.exit_code == 1 and result.stopped == "failure budget"
    trials = optuna.load_study(study_name="s", storage=pg_url).get_trials()
    ran = [t for t in trials if t.user_attrs["fail_reason"].startswith("worker died")]
    assert len(ran) == 3  # the third failure spent the budget
    # a trial asked ahead for the next free slot never started: it is closed with that reason, not left RUNNING
    rest = [t for t in trials if t not in ran]
    assert all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("not started") for t in rest)
    assert len(rest) <= 1


def test_trials_left_running_by_a_dead_driver_are_failed_when_a_sweep_starts(tmp_path: Path, pg_url: str) -> None:
    cfg = _cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 2})
    from storage import close_storage, open_storage

    s = open_storage(pg_url)
    study = optuna.create_study(study_name="s", storage=s, direction="maximize")
    orphan = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)})
    orphan.report(0.5, 1)
    close_storage(s)
    assert _run(cfg).exit_code == 0
    reaped = optuna.load_study(study_name="s", storage=pg_url).get_trials()[0]
    assert reaped.number == orphan.number and reaped.state == TrialState.FAIL
    assert reaped.user_attrs["fail_reason"].startswith("driver lost")
    assert not reaped.user_attrs["fail_reason"].endswith("(never started)")  # it reported an epoch: it ran


def test_an_orphan_no_worker_started_is_rerun_without_spending_a_retry(tmp_path: Path, pg_url: str) -> None:
    cfg = _cfg(tmp_path, pg_url, BASE + "retries: 0\n", **{"study.n_trials": 2})
    from storage import close_storage, open_storage

    s = open_storage(pg_url)
    study = optuna.create_study(study_name="s", storage=s, direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    ran = study.ask(dist)  # a worker had started this one (it recorded its node) before the driver died
    ran.set_user_attr("node", {"pid": 1})
    ran.set_user_attr("attempt", 1)
    ahead = study.ask(dist)  # asked ahead for the next free slot; no worker ever picked it up
    ahead.set_user_attr("attempt", 1)
    close_storage(s)
    assert _run(cfg).exit_code == 0
    trials = {t.number: t for t in optuna.load_study(study_name="s", storage=pg_url).get_trials()}
    assert trials[ran.number].state == TrialState.FAIL and "retried_by" not in trials[ran.number].user_attrs
    lost = trials[ahead.number]
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"].endswith("(never started)")
    rerun = trials[lost.user_attrs["retried_by"]]
    assert rerun.params == lost.params and rerun.user_attrs["attempt"] == 1
    assert rerun.state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_tensorboard_writes_one_run_per_trial(tmp_path: Path, pg_url: str) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    text = BASE.replace("pruner: {n_startup_trials: 3, n_warmup_steps: 1}", "pruner: none") + "tensorboard: true\n"
    result = _run(_cfg(tmp_path, pg_url, text, **{"study.n_trials": 3}))
    assert result.exit_code == 0
    runs = sorted((tmp_path / "runs" / "s" / "tensorboard").iterdir())
    assert [p.name for p in runs] == ["trial-00000", "trial-00001", "trial-00002"]
    study = optuna.load_study(study_name="s", storage=pg_url)
    for run, trial in zip(runs, study.get_trials(), strict=True):
        events = EventAccumulator(str(run))
        events.Reload()
        curve = {e.step: e.value for e in events.Scalars("val_acc")}
        assert curve == pytest.approx(trial.intermediate_values, rel=1e-6)
        assert "train_config/text_summary" in events.Tags()["tensors"]  # the trial's config, as text


def test_status_numbers_match_the_study(tmp_path: Path, pg_url: str) -> None:
    from hpo.views.studies import study_status

    text = BASE + "early_stopping: {patience: 1}\n"
    assert _run(_cfg(tmp_path, pg_url, text, **{"study.n_trials": 8})).exit_code == 0
    st = study_status(pg_url, "s")
    study = optuna.load_study(study_name="s", storage=pg_url)
    trials = study.get_trials()
    for state in TrialState:
        assert st.counts[state.name] == sum(t.state == state for t in trials)
    assert st.best is not None and st.best["number"] == study.best_trial.number
    run = sum(len(t.intermediate_values) for t in trials)
    budget = 5 * len(trials)  # every trial was configured for 5 epochs
    assert (st.epochs_run, st.epochs_budget, st.epochs_saved) == (run, budget, budget - run)
    assert st.saved_fraction == pytest.approx((budget - run) / budget)
    assert st.epochs_saved > 0  # pruning and early stopping did save something
    assert st.trial_seconds > 0


def test_enqueue_warm_starts_with_an_exported_config(tmp_path: Path, pg_url: str) -> None:
    from hpo.sweep import run_sweep
    from hpo.views.export import export_best

    assert _run(_cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 4})).exit_code == 0
    exported = export_best(pg_url, "s", tmp_path / "best.yaml")
    best = optuna.load_study(study_name="s", storage=pg_url).best_trial
    cfg = _cfg(tmp_path, pg_url, BASE, **{"study.n_trials": 2, "study.name": "warm"})
    result = run_sweep(
        cfg, workload=workloads.synthetic, observer=QuietObserver(), check_data=False, enqueue=str(exported.path)
    )
    assert result.exit_code == 0
    first = optuna.load_study(study_name="warm", storage=pg_url).get_trials()[0]
    assert first.params == pytest.approx(best.params)


def test_a_trial_worker_imports_no_optuna_or_database_driver(tmp_path: Path) -> None:
    """A trial task's arguments (the coordinator's handle, the workload) make a worker import their modules:
    those must not pull in Optuna, SQLAlchemy, psycopg2 or the config models (time and memory on every
    worker). The probe runs in a worker of its own (a runtime env of its own), given what a trial is given."""
    import ray

    from hpo.cluster.worker import train_workload
    from hpo.coordinator import actor as coordinator_actor

    actor = coordinator_actor.start(_settings(f"sqlite:///{tmp_path}/never-opened.db", "s"))
    try:
        env = {"env_vars": {"HPO_TEST_FRESH_WORKER": "1"}}
        probe = ray.remote(num_cpus=0, runtime_env=env)(workloads.heavy_modules)
        assert ray.get(probe.remote(actor, train_workload), timeout=120) == []
    finally:
        ray.kill(actor)


def test_the_coordinator_renews_the_lease_at_connect_and_gives_it_up_at_close(pg_url: str) -> None:
    """The coordinator, not a new driver-side storage, releases the study's lease when the sweep ends; a lease
    another sweep took is reported at connect and left alone at close."""
    from hpo.coordinator.coordinator import Coordinator
    from hpo.sweep import lease
    from storage import close_storage, open_storage

    s = open_storage(pg_url)
    study = optuna.create_study(study_name="leased", storage=s, direction="maximize")
    try:
        ours = lease.new_lease("ours")
        lease.write(s, study._study_id, ours)
        coord = Coordinator(_settings(pg_url, "leased", lease=ours), connect=False)
        assert coord.connect() is True
        assert lease.read(s, study._study_id)["heartbeat"] >= ours["heartbeat"]
        assert coord.close() is True
        assert lease.read(s, study._study_id) is None

        theirs = lease.new_lease("theirs")
        lease.write(s, study._study_id, theirs)
        coord = Coordinator(_settings(pg_url, "leased", lease=lease.new_lease("ours")), connect=False)
        assert coord.connect() is False
        assert coord.close() is True  # nothing of ours to give up
        assert lease.read(s, study._study_id)["owner"] == "theirs"
    finally:
        close_storage(s)
