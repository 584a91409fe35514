"""How a sweep ends and how the next one picks up (issue 18): a retry half made by a driver that died, every
trial out of GPU memory, ``study.timeout`` short of the target, and SIGTERM. Real PostgreSQL, the real
coordinator, a real local Ray, and for SIGTERM the real CLI as a subprocess."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from hpo import study as studies
from hpo.config import SweepConfig
from hpo.coordinator.coordinator import Coordinator
from hpo.coordinator.messages import Asked, FailureKind
from hpo.coordinator.settings import CoordinatorSettings
from hpo.progress import QuietObserver
from hpo.sweep.ledger import GPU_MEMORY_STREAK, StopReason
from hpo.sweep.prepare import DRIVER_LOST
from hpo.sweep.run import run_sweep
from hpo.sweep.stop import Stopper
from storage import close_storage, open_storage
from tests import workloads
from tests.fixtures_files import sweep_config
from trials.paths import CHECKPOINT_NAME

BASE = """
study: {name: f, n_trials: 2, sampler: {name: random, seed: 1}}
pruner: none
search_space:
  lr: {low: 1.0e-4, high: 1.0, log: true}
train: {epochs: 3, image_size: 32}
"""


def _trials(url: str, name: str = "f") -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


class _Lines(QuietObserver):
    def __init__(self) -> None:
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)


# ---- bug 1: a retry half made ------------------------------------------------------------------------


def _half_done_retry(cfg: SweepConfig) -> tuple[Asked, int]:
    """What a driver that died inside ``fail_and_retry(X)`` leaves: X RUNNING, having run two epochs (a node,
    a curve, a checkpoint on disk), and its retry Y RUNNING too (created, registered, never started), X not
    told. Made with the sweep's own coordinator, calling the parts of ``fail_and_retry`` before the tell."""
    storage = open_storage(cfg.storage or "")
    optuna.create_study(study_name=cfg.study_name, storage=storage, direction="maximize")
    close_storage(storage)
    lost = Coordinator(CoordinatorSettings.from_config(cfg, parallel=1, lease=None))
    x = lost.ask()
    assert lost.started(x.trial_id, {"host": "gone", "pid": 1})
    for epoch in (1, 2):
        lost.report(x.trial_id, epoch, {"val_acc": 0.1 * epoch})
    Path(x.checkpoint_dir).mkdir(parents=True)
    Path(x.checkpoint_dir, CHECKPOINT_NAME).write_text(json.dumps({"epoch": 2}))  # workloads.checkpointing's
    failed = lost._study._storage.get_trial(x.trial_id)
    y_id = lost._create(f"retry-of:{x.trial_id}", params=(failed.params, failed.distributions), existing=True)
    y_number = lost._study._storage.get_trial_number_from_id(y_id)
    lost._register(y_id, y_number, dict(failed.params), attempt=2, retry_of=x.number, resume_from=x.checkpoint_dir)
    lost.close()  # the driver dies here: X is never told
    return x, y_id


@pytest.mark.postgres
def test_reaping_a_half_done_retry_fails_the_trial_once_and_resumes_its_retry_from_its_checkpoint(
    tmp_path: Path, pg_url: str
) -> None:
    """Issue 18 (1): the reap handed Y back to run, then failed Y as never started and made Z from Y's empty
    folder: a FAIL counted twice, X's checkpoint ignored."""
    cfg = sweep_config(tmp_path, pg_url, BASE + "retries: 1\n")
    x, y_id = _half_done_retry(cfg)
    orphans = [t._trial_id for t in _trials(pg_url) if t.state == TrialState.RUNNING]
    assert len(orphans) == 2
    c = Coordinator(CoordinatorSettings.from_config(cfg, parallel=1, lease=None))
    try:
        r = c.reap(orphans, DRIVER_LOST, retries=1, limit=2)
    finally:
        c.close()
    assert r.failed == [x.number] and r.created == 0
    assert [(a.trial_id, a.resume_from, a.attempt) for a in r.to_run] == [(y_id, x.checkpoint_dir, 2)]
    trials = _trials(pg_url)
    assert len(trials) == 2  # no third trial
    fails = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in fails] == [x.number]
    assert fails[0].user_attrs["fail_kind"] == FailureKind.LOST.value  # spends no failure budget
    assert fails[0].user_attrs["retried_by"] == r.to_run[0].number
    assert FailureKind.LOST.spends_budget is False


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_the_next_sweep_finishes_a_half_done_retry_from_the_checkpoint_without_spending_the_budget(
    tmp_path: Path, pg_url: str
) -> None:
    """Issue 18 (1), through a real sweep: Y runs once, resumes from X's epoch 2, and no budget is spent."""
    cfg = sweep_config(tmp_path, pg_url, BASE + "retries: 1\nmax_failures: 0\n")
    x, y_id = _half_done_retry(cfg)
    obs = _Lines()
    result = run_sweep(cfg, workload=workloads.checkpointing, observer=obs, check_data=False)
    assert result.exit_code == 0 and result.failed_now == 0, obs.said
    trials = {t._trial_id: t for t in _trials(pg_url)}
    assert [t.number for t in trials.values() if t.state == TrialState.FAIL] == [x.number]
    y = trials[y_id]
    assert y.state == TrialState.COMPLETE and y.user_attrs["resumed_from_epoch"] == 2
    assert not [t for t in trials.values() if t.user_attrs.get("retry_of") == y.number]
    assert studies.state_counts(trials.values()) == result.counts


# ---- bug 3: out of GPU memory forever ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
@pytest.mark.timeout(600)  # generous: a loaded CI machine; the old code never ended
def test_a_sweep_whose_every_trial_runs_out_of_gpu_memory_stops_with_exit_1_and_says_what_to_change(
    tmp_path: Path, pg_url: str
) -> None:
    """Issue 18 (3): OOM neither spent the budget nor stopped the sweep: 1,175 FAIL trials in 150 s, still asking."""
    text = BASE.replace("search_space:\n", "search_space:\n  batch_size: [64, 128]\n")
    obs = _Lines()
    result = run_sweep(
        sweep_config(tmp_path, pg_url, text), workload=workloads.out_of_gpu_memory, observer=obs, check_data=False
    )
    assert result.stopped is StopReason.GPU_MEMORY and result.exit_code == 1
    assert result.failed_now == 0
    trials = _trials(pg_url)
    oom = [t for t in trials if t.user_attrs.get("fail_kind") == "gpu_memory"]
    assert GPU_MEMORY_STREAK <= len(oom) <= GPU_MEMORY_STREAK + 4  # at most the ones running or asked ahead
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stop = next(m for m in obs.said if "ran out of GPU memory" in m)
    assert "batch_size=" in stop and "model=resnet18" in stop
    assert "search_space.batch_size" in stop and "resources.gpus_per_trial" in stop


# ---- study.timeout short of the target ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_a_timeout_short_of_the_target_exits_3(tmp_path: Path, pg_url: str) -> None:
    """Issue 18 (3rd part): a sweep study.timeout ended short of its target exited 0, like a finished one."""
    overrides: dict[str, object] = {"study.n_trials": 50, "study.timeout": 0.001}
    cfg = sweep_config(tmp_path, pg_url, BASE, **overrides)
    result = run_sweep(cfg, workload=workloads.synthetic, observer=QuietObserver(), check_data=False)
    assert result.stopped is StopReason.TIMEOUT and result.exit_code == 3
    assert not [t for t in _trials(pg_url) if t.state == TrialState.RUNNING]


# ---- SIGTERM ------------------------------------------------------------------------------------------


class _TerminateOnceRunning(QuietObserver):
    """Sends the sweep a SIGTERM (as its handler would: ``Stopper.terminate``) once a trial has run an epoch."""

    def __init__(self, stopper: Stopper) -> None:
        self.stopper = stopper
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)

    def tick(self, live: list[dict[str, Any]], counts: Any, best: Any) -> None:
        if not self.stopper.terminating and any(t.get("epoch", 0) >= 1 for t in live):
            self.stopper.terminate()


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_local")
def test_past_a_short_drain_timeout_running_trials_are_left_to_resume_and_spend_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """Issue 18 (SIGTERM): trials still running after drain_timeout are told FAIL (stopped, no budget, no
    attempt), nothing is left RUNNING, and the next sweep resumes each from its checkpoint."""
    text = BASE.replace("epochs: 3", "epochs: 100") + "drain_timeout: 0\nmax_failures: 0\nparallel: 2\n"
    cfg = sweep_config(tmp_path, pg_url, text)
    stopper = Stopper()
    obs = _TerminateOnceRunning(stopper)
    first = run_sweep(
        cfg, workload=workloads.checkpointing, observer=obs, check_data=False, stopper=stopper, handle_sigint=False
    )
    assert first.stopped is StopReason.TERMINATED and first.exit_code == 143, obs.said
    assert first.failed_now == 0
    trials = _trials(pg_url)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("fail_kind") == "stopped"]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    assert any(m.startswith("SIGTERM: no new trials") for m in obs.said)

    # terminated again before its resumes could start: they are left resumable too, from the same checkpoints
    early = Stopper()
    early.terminate()
    second = run_sweep(
        cfg,
        workload=workloads.checkpointing,
        observer=QuietObserver(),
        check_data=False,
        stopper=early,
        handle_sigint=False,
    )
    assert second.exit_code == 143 and second.launched == 0 and second.failed_now == 0
    assert not [t for t in _trials(pg_url) if t.state == TrialState.RUNNING]

    again = _Lines()
    third = run_sweep(cfg, workload=workloads.checkpointing, observer=again, check_data=False)
    assert third.exit_code == 0 and third.failed_now == 0, again.said
    trials = _trials(pg_url)
    by_number = {t.number: t for t in trials}
    for t in stopped:
        chain = [u for u in trials if _root(u, by_number) == t.number and u.number != t.number]
        resumed = [u for u in chain if u.state == TrialState.COMPLETE]
        assert len(resumed) == 1 and resumed[0].params == t.params, chain  # resumed once, same params
        assert resumed[0].user_attrs["attempt"] == t.user_attrs["attempt"]  # no attempt spent
        assert resumed[0].user_attrs["resumed_from_epoch"] >= 1  # from the stopped trial's checkpoint
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert any("a terminated sweep stopped" in m for m in again.said)


def _root(t: FrozenTrial, by_number: dict[int, FrozenTrial]) -> int:
    while t.user_attrs.get("retry_of") is not None:
        t = by_number[t.user_attrs["retry_of"]]
    return t.number


@pytest.mark.slow
@pytest.mark.postgres
def test_sigterm_to_a_cli_sweep_exits_143_without_an_abort_trace_and_the_next_sweep_resumes(
    tmp_path: Path, pg_url: str, pretrained: Path
) -> None:
    """Issue 18 (SIGTERM): a CLI sweep on PostgreSQL exited 134 with Ray's C++ "SIGTERM received" trace, and
    its running trials were told FAIL as if the sweep had failed."""
    from tests.test_reliability import FINISHED, Study, Sweep, config, running_with_epochs

    cfg = config(tmp_path / "c.yaml", pretrained, n_trials=3, epochs=6, extra="drain_timeout: 2\n")
    study = Study(pg_url)
    sweep = Sweep(cfg, pg_url, tmp_path)
    try:
        running = study.wait_for(lambda ts: len(running_with_epochs(ts)) == 2 and running_with_epochs(ts))
        sweep.proc.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=120) == 143, sweep.output
        out = sweep.output
        trials = {t.number: t for t in study.trials()}
        assert "SIGTERM received" not in out and "*** " not in out and "Traceback" not in out, out
        assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
        for t in running:
            after = trials[t.number]
            assert after.state in FINISHED or after.user_attrs.get("fail_kind") == "stopped", after.user_attrs
        stopped = [t.number for t in trials.values() if t.user_attrs.get("fail_kind") == "stopped"]

        again = Sweep(cfg, pg_url, tmp_path)
        assert again.wait() == 0, again.output
        final = study.trials()
    finally:
        for s in (sweep,):
            if s.proc.poll() is None:
                s.proc.kill()
        study.close()
    assert len([t for t in final if t.state in FINISHED]) == 3
    assert not [t for t in final if t.state == TrialState.RUNNING]
    for n in stopped:
        resumed = next(t for t in final if t.user_attrs.get("retry_of") == n)
        assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["resumed_from_epoch"] >= 1
