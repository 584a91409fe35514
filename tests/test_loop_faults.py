"""The sweep loop's failure paths, each a bug once: a real local Ray, real PostgreSQL or SQLite, the real
coordinator, and synthetic workloads that fail on purpose (``tests/workloads.py``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hpo import study as studies
from hpo.config import SweepConfig
from hpo.coordinator.coordinator import Coordinator
from hpo.coordinator.messages import FailureKind, Outcome
from hpo.coordinator.settings import CoordinatorSettings
from hpo.errors import SweepError
from hpo.progress import QuietObserver
from hpo.sweep.run import run_sweep
from hpo.sweep.stop import Stopper
from storage import close_storage, open_storage
from tests import workloads
from tests.conftest import REPO
from tests.fixtures_files import coordinator_settings, sweep_config

BASE = """
study: {name: f, n_trials: 6, sampler: {name: random, seed: 1}}
pruner: none
search_space:
  lr: {low: 1.0e-4, high: 1.0, log: true}
train: {epochs: 3, image_size: 32}
"""


def _cfg(tmp_path: Path, url: str, text: str = BASE, **overrides: Any) -> SweepConfig:
    return sweep_config(tmp_path, url, text, **overrides)


def _db_counts(url: str, name: str) -> dict[str, int]:
    return studies.state_counts(optuna.load_study(study_name=name, storage=url).get_trials())


class _CtrlCOnceAfterTheBudget(QuietObserver):
    """Presses Ctrl-C once, right after the sweep said it stops for its failure budget."""

    def __init__(self, stopper: Stopper) -> None:
        self.stopper = stopper
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)
        if text.startswith("stopping:") and self.stopper.requests == 0:
            self.stopper.request()


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_after_the_failure_budget_the_first_ctrl_c_still_lets_running_trials_finish(
    tmp_path: Path, pg_url: str
) -> None:
    """Bug 1: the spent budget used to count as the user's first Ctrl-C, so their first one cancelled."""
    stopper = Stopper()
    obs = _CtrlCOnceAfterTheBudget(stopper)
    cfg = _cfg(tmp_path, pg_url, BASE + "max_failures: 0\n", parallel=2)
    result = run_sweep(
        cfg,
        workload=workloads.first_slow_rest_fail,
        observer=obs,
        check_data=False,
        stopper=stopper,
        handle_sigint=False,
    )
    assert result.stopped == "failure budget" and result.exit_code == 1
    assert stopper.requests == 1 and any(m.startswith("Ctrl-C: no new trials") for m in obs.said)
    trial0 = optuna.load_study(study_name="f", storage=pg_url).trials[0]
    assert trial0.state == TrialState.COMPLETE, trial0.user_attrs  # finished, not cancelled
    assert result.counts == _db_counts(pg_url, "f")  # bug 6: the loop's counts are the study's
    assert result.counts["RUNNING"] == 0


def test_a_ctrl_c_landing_inside_the_stopper_does_not_deadlock() -> None:
    """Bug 2: the SIGINT handler and the loop both took the stopper's lock on the main thread. A timer signal
    whose handler requests a stop fires every 100 microseconds while the main thread requests stops too."""
    script = textwrap.dedent(
        """
        import signal, time
        from hpo.sweep import Stopper
        s = Stopper()
        signal.signal(signal.SIGALRM, lambda *a: s.request())
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            s.request()
            s.draining, s.cancelling
        signal.setitimer(signal.ITIMER_REAL, 0)
        print("done", s.requests > 1000)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "done True", r.stderr


def _settings(url: str, name: str, tmp_path: Path) -> CoordinatorSettings:
    return coordinator_settings(url, name, tmp_path / "runs")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/c.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def coordinator(url: str, tmp_path: Path) -> Any:
    storage = open_storage(url)
    optuna.create_study(study_name="c", storage=storage, direction="maximize")
    close_storage(storage)
    coord = Coordinator(_settings(url, "c", tmp_path))
    yield coord
    coord.close()


class _CommitThenDrop:
    """Fault injection on a real storage: the first ``create_new_trial`` commits, then its connection breaks
    before the answer arrives (as a database restart can do)."""

    def __init__(self, storage: Any) -> None:
        self.storage, self.failed = storage, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def create_new_trial(self, *args: Any, **kwargs: Any) -> int:
        import sqlalchemy.exc

        trial_id = self.storage.create_new_trial(*args, **kwargs)
        if not self.failed:
            self.failed = True
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        return trial_id


def test_a_create_retried_after_its_write_committed_makes_one_trial(coordinator: Any, url: str) -> None:
    """Bug 4: ``study.ask`` retried after a lost connection whose write had committed made a second trial."""
    real = coordinator._study._storage
    coordinator._study._storage = _CommitThenDrop(real)
    try:
        asked = coordinator.ask()
    finally:
        coordinator._study._storage = real
    trials = optuna.load_study(study_name="c", storage=url).get_trials()
    assert [t._trial_id for t in trials] == [asked.trial_id]
    assert "lr" in trials[0].params


def test_a_retry_is_created_once_however_often_it_is_asked_for(coordinator: Any, url: str) -> None:
    """Bug 4: the retry of a failed trial is keyed by it; asking twice (a lost answer, a reap of a half-done
    retry) gives the same retry, and the failed trial is FAIL and linked to it."""
    asked = coordinator.ask()
    lost = Outcome.fail(FailureKind.INFRA, "worker died: SIGKILL")
    told, retry = coordinator.fail_and_retry(asked.trial_id, lost)
    again, retry2 = coordinator.fail_and_retry(asked.trial_id, lost)
    assert retry2.trial_id == retry.trial_id and told.retried_by == retry.number == again.retried_by
    trials = optuna.load_study(study_name="c", storage=url).get_trials()
    assert len(trials) == 2
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["retried_by"] == retry.number
    assert trials[1].params == trials[0].params and trials[1].user_attrs["attempt"] == 2


def test_a_late_started_call_is_ignored_and_stops_the_worker(coordinator: Any, url: str) -> None:
    """Bug 5: the worker's 'started' could reach the coordinator after the trial's FAIL tell."""
    asked = coordinator.ask()
    coordinator.tell(asked.trial_id, Outcome.fail(FailureKind.INFRA, "worker died"))
    assert coordinator.started(asked.trial_id, {"host": "late"}) is False
    trial = optuna.load_study(study_name="c", storage=url).trials[0]
    assert trial.state == TrialState.FAIL and "node" not in trial.user_attrs
    fresh = coordinator.ask()
    assert coordinator.started(fresh.trial_id, {"host": "h"}) is True


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_resuming_with_a_lower_target_does_not_overshoot_it_with_orphan_reruns(tmp_path: Path, pg_url: str) -> None:
    """Bug 6: trials a lost driver left RUNNING were all rerun, whatever the target."""
    assert (
        run_sweep(
            _cfg(tmp_path, pg_url, **{"study.n_trials": 2}),
            workload=workloads.synthetic,
            observer=QuietObserver(),
            check_data=False,
        ).exit_code
        == 0
    )
    lost = Coordinator(_settings(pg_url, "f", tmp_path))  # a driver that asked four trials, then died
    for _ in range(4):
        lost.ask()
    lost.close()
    result = run_sweep(
        _cfg(tmp_path, pg_url, **{"study.n_trials": 3}),
        workload=workloads.synthetic,
        observer=QuietObserver(),
        check_data=False,
    )
    counts = _db_counts(pg_url, "f")
    assert counts["COMPLETE"] + counts["PRUNED"] == 3  # one rerun, not four
    assert counts["RUNNING"] == 0 and counts["FAIL"] == 4
    assert result.counts == counts


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_a_failure_that_is_not_the_hyperparameters_fault_stops_the_sweep_at_the_first(
    tmp_path: Path, pg_url: str
) -> None:
    """Bug 10: unreadable data failed every trial the same way until the failure budget ran out."""
    said: list[str] = []

    class Lines(QuietObserver):
        def message(self, text: str) -> None:
            said.append(text)

    cfg = _cfg(tmp_path, pg_url, BASE + "max_failures: 3\n", parallel=2)
    result = run_sweep(cfg, workload=workloads.unreadable_data, observer=Lines(), check_data=False)
    assert result.stopped == "environment" and result.exit_code == 1
    assert result.failed_now == 0  # copies of it spent no budget
    trials = optuna.load_study(study_name="f", storage=pg_url).get_trials()
    ran = [t for t in trials if t.user_attrs.get("fail_kind") == "environment"]
    assert 1 <= len(ran) <= 2  # the first, and at most the one running beside it
    assert all(t.state == TrialState.FAIL for t in trials)
    stop = next(m for m in said if m.startswith("stopping:"))
    assert "/data/train/cat/broken.jpg" in stop and "not the hyperparameters' fault" in stop
    assert result.counts == _db_counts(pg_url, "f")


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_a_sweep_that_loses_its_study_stops_and_writes_nothing_more(tmp_path: Path, pg_url: str) -> None:
    """Issue 18 (2): a sweep that has lost its study to another is fenced: it stops, and writes nothing more
    (not even the FAIL of the trials it held: they are the new owner's to reap). The lease was taken over by
    trial 0 before its first report, so that report and every later write were refused."""
    cfg = _cfg(tmp_path, pg_url, **{"study.n_trials": 20}, parallel=2)
    root = Path(cfg.output_dir) / "f"
    root.mkdir(parents=True)
    (root / "steal.txt").write_text(f"{pg_url} f")
    with pytest.raises(SweepError, match="took study 'f' over"):
        run_sweep(cfg, workload=workloads.steal_lease, observer=QuietObserver(), check_data=False)
    trials = optuna.load_study(study_name="f", storage=pg_url).trials
    assert trials[0].state == TrialState.RUNNING and not trials[0].intermediate_values, trials[0]
    assert not [t for t in trials if t.user_attrs.get("fail_kind") == "interrupted"]


def test_a_local_ray_counts_its_cpus_itself() -> None:
    """Bug 8: ``num_cpus=os.cpu_count()`` overrode Ray's cgroup-aware count and oversubscribed containers."""
    from hpo.cluster.session import local_init_options

    assert "num_cpus" not in local_init_options("/tmp/x")


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_out_of_gpu_memory_is_named_not_retried_and_spends_no_budget(tmp_path: Path, pg_url: str) -> None:
    """Issue 13 (4): ``torch.cuda.OutOfMemoryError`` (raised on the CPU here, the same exception type) is FAIL
    "out of GPU memory at batch_size=..., model=...", never retried, and spends no failure budget."""
    text = BASE.replace("search_space:\n", "search_space:\n  batch_size: [16, 256]\n") + "max_failures: 0\nretries: 2\n"
    cfg = _cfg(tmp_path, pg_url, text, parallel=2)
    result = run_sweep(cfg, workload=workloads.out_of_gpu_memory, observer=QuietObserver(), check_data=False)
    assert result.exit_code == 0 and result.failed_now == 0
    trials = optuna.load_study(study_name="f", storage=pg_url).get_trials()
    oom = [t for t in trials if t.state == TrialState.FAIL]
    assert oom, "the sampler never picked batch_size 256"
    for t in oom:
        assert t.params["batch_size"] == 256 and t.user_attrs["fail_kind"] == "gpu_memory"
        assert t.user_attrs["fail_reason"] == "out of GPU memory at batch_size=256, model=resnet18"
        assert "retried_by" not in t.user_attrs
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
