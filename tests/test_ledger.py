"""The sweep loop's bookkeeping and its stop decisions, without Ray or Optuna: tables of events and what
the ledger must say after them."""

from __future__ import annotations

import pytest

from hpo.coordinator.messages import FailureKind, Told
from hpo.sweep.ledger import GPU_MEMORY_STREAK, Ledger, StopReason
from hpo.sweep.stop import Stopper


def _ledger(target: int = 4, max_failures: int = 1, **counts: int) -> Ledger:
    return Ledger(target=target, max_failures=max_failures, direction="maximize", counts=counts)


def _told(number: int, state: str, value: float | None = None) -> Told:
    return Told(number, state, value, {"lr": 0.1}, 3)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (StopReason.TARGET_REACHED, 0),
        (StopReason.NOTHING_TO_DO, 0),
        (StopReason.TIMEOUT, 3),  # short of the target: not a success, not a failure, not a usage error (2)
        (StopReason.FAILURE_BUDGET, 1),
        (StopReason.ENVIRONMENT, 1),
        (StopReason.GPU_MEMORY, 1),
        (StopReason.INTERRUPTED, 130),
        (StopReason.CANCELLED, 130),
        (StopReason.TERMINATED, 143),
    ],
)
def test_every_stop_reason_has_one_exit_code(reason: StopReason, code: int) -> None:
    assert reason.exit_code == code
    assert reason == reason.value  # a str enum: compares with its text


@pytest.mark.parametrize(
    ("kind", "retryable", "spends", "stops", "attempt"),
    [
        (FailureKind.TRIAL, False, True, False, False),
        (FailureKind.INFRA, True, True, False, True),  # a worker crash may be the params' doing
        (FailureKind.LOST, True, False, False, True),  # issue 18: a lost node or driver spends no budget
        (FailureKind.ENVIRONMENT, False, False, True, False),
        (FailureKind.GPU_MEMORY, False, False, False, False),
        (FailureKind.INTERRUPTED, False, False, False, False),
        (FailureKind.NOT_STARTED, False, False, False, False),
        (FailureKind.STOPPED, False, False, False, False),  # resumed by the next sweep, not this one
    ],
)
def test_failure_kinds_are_data(kind: FailureKind, retryable: bool, spends: bool, stops: bool, attempt: bool) -> None:
    assert (kind.retryable, kind.spends_budget, kind.stops_sweep) == (retryable, spends, stops)
    assert kind.spends_attempt is attempt


@pytest.mark.parametrize(
    ("running", "waiting", "asking", "finished", "parallel", "ahead", "wanted"),
    [
        (0, 0, 0, 0, 2, 2, 4),  # free slots and two ahead
        (2, 0, 0, 0, 2, 2, 2),  # busy: only the ones ahead
        (2, 1, 1, 0, 2, 2, 0),  # already asked ahead
        (0, 0, 0, 3, 2, 2, 1),  # never past the target (4)
        (1, 0, 0, 3, 2, 2, 0),
        (0, 0, 0, 4, 2, 2, 0),
    ],
)
def test_asks_fill_free_slots_and_ahead_never_past_the_target(
    running: int, waiting: int, asking: int, finished: int, parallel: int, ahead: int, wanted: int
) -> None:
    led = _ledger(COMPLETE=finished)
    led.running, led.waiting, led.asking = running, waiting, asking
    assert led.asks_wanted(parallel, ahead) == wanted


def test_a_trial_is_running_from_its_ask_to_its_tell_and_counts_match_the_study() -> None:
    """Bug 6: the trials told 'not started' go through the counters like every other tell."""
    led = _ledger(target=2)
    led.asked(3)
    for _ in range(3):
        led.answered()
    assert led.counts["RUNNING"] == 3 and led.waiting == 3
    led.launch()
    led.ended()
    led.telling_started()
    led.told(_told(0, "COMPLETE", 0.5), None, pending=True)
    led.not_started(2)
    led.told(_told(1, "FAIL"), FailureKind.NOT_STARTED)
    led.told(_told(2, "FAIL"), FailureKind.NOT_STARTED)
    assert led.counts == {"RUNNING": 0, "WAITING": 0, "COMPLETE": 1, "PRUNED": 0, "FAIL": 2}
    assert (led.waiting, led.running, led.telling, led.asking) == (0, 0, 0, 0)
    assert led.failed_now == 0  # not started spends no budget
    assert led.best is not None and led.best.number == 0


@pytest.mark.parametrize(
    ("values", "best"),
    [([0.5, 0.7, 0.6], 1), ([0.5, 0.5], 0), ([float("nan"), 0.1], 1)],
)
def test_best_keeps_the_earliest_of_equals(values: list[float], best: int) -> None:
    led = _ledger()
    for i, v in enumerate(values):
        led.told(_told(i, "COMPLETE", v), None)
    assert led.best is not None and led.best.number == best


def test_the_failure_budget_stops_launching_without_touching_the_users_ctrl_c() -> None:
    """Bug 1: a spent budget is the ledger's stop reason; the user's first Ctrl-C is still the first."""
    led, stopper = _ledger(max_failures=1), Stopper()
    for i in range(2):
        led.told(_told(i, "FAIL"), FailureKind.TRIAL)
    assert led.check(past_deadline=False, draining=stopper.draining) is StopReason.FAILURE_BUDGET
    assert not led.launching and stopper.requests == 0
    stopper.request()
    assert stopper.draining and not stopper.cancelling  # the first Ctrl-C does not cancel running trials
    assert led.check(past_deadline=False, draining=True) is None  # decided once
    led.cancelled()
    assert led.final_reason() is StopReason.FAILURE_BUDGET


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([], StopReason.TARGET_REACHED),
        (["deadline"], StopReason.TIMEOUT),
        (["ctrl-c"], StopReason.INTERRUPTED),
        (["ctrl-c", "cancel"], StopReason.CANCELLED),
        (["deadline", "cancel"], StopReason.CANCELLED),
        (["environment"], StopReason.ENVIRONMENT),
        (["environment", "cancel"], StopReason.ENVIRONMENT),
        (["trial", "trial"], StopReason.FAILURE_BUDGET),
        (["trial"], StopReason.TARGET_REACHED),  # within the budget (max_failures=1)
        (["interrupted", "interrupted", "not started"], StopReason.TARGET_REACHED),  # these spend nothing
        (["lost", "lost", "stopped", "stopped"], StopReason.TARGET_REACHED),  # issue 18: nor do these
        (["sigterm"], StopReason.TERMINATED),
        (["sigterm", "cancel"], StopReason.TERMINATED),  # a second signal after SIGTERM still exits 143
        (["ctrl-c", "sigterm"], StopReason.TERMINATED),
        (["deadline", "sigterm"], StopReason.TERMINATED),
        (["trial", "trial", "sigterm"], StopReason.FAILURE_BUDGET),  # its own reason first
        (["oom"] * 4, StopReason.TARGET_REACHED),
        (["oom"] * 5, StopReason.GPU_MEMORY),
        (["oom", "oom", "oom", "complete", "oom", "oom"], StopReason.TARGET_REACHED),  # a finish resets the run
        (["oom", "oom", "trial", "oom", "oom", "oom"], StopReason.GPU_MEMORY),  # another failure does not
        (["deadline", "complete"], StopReason.TIMEOUT),  # short of the target (4)
        (["deadline"] + ["complete"] * 4, StopReason.TARGET_REACHED),  # the running trials reached it
    ],
)
def test_stop_reasons(events: list[str], reason: StopReason) -> None:
    led = _ledger(max_failures=1)
    kinds = {"trial": FailureKind.TRIAL, "environment": FailureKind.ENVIRONMENT, "lost": FailureKind.LOST}
    kinds |= {"interrupted": FailureKind.INTERRUPTED, "not started": FailureKind.NOT_STARTED}
    kinds |= {"stopped": FailureKind.STOPPED, "oom": FailureKind.GPU_MEMORY}
    for i, event in enumerate(events):
        if event in kinds:
            led.told(_told(i, "FAIL"), kinds[event], config={"batch_size": 64, "model": "resnet18"})
        if event == "complete":
            led.told(_told(i, "COMPLETE", 0.5), None)
        if event == "cancel":
            led.cancelled()
        led.check(past_deadline=event == "deadline", draining=event == "ctrl-c", terminating=event == "sigterm")
    assert led.final_reason() is reason


def test_the_gpu_memory_stop_names_what_ran_out() -> None:
    """Issue 18 (3): every trial out of GPU memory used to make the sweep ask forever."""
    led = _ledger(target=2, max_failures=0)
    for i in range(GPU_MEMORY_STREAK):
        led.told(_told(i, "FAIL"), FailureKind.GPU_MEMORY, config={"batch_size": 64 * (1 + i % 2), "model": "vit"})
        assert led.failed_now == 0
    assert led.check(past_deadline=False, draining=False) is StopReason.GPU_MEMORY
    assert sorted(set(led.gpu_memory_streak)) == ["batch_size=128 model=vit", "batch_size=64 model=vit"]


def test_a_sigterm_drains_for_its_timeout_then_stops_and_a_second_signal_cancels() -> None:
    stopper = Stopper()
    assert not stopper.terminating and not stopper.drained(0)
    stopper.terminate()
    assert stopper.terminating and stopper.draining and not stopper.cancelling
    assert stopper.drained(0) and not stopper.drained(3600)
    stopper.request()  # Ctrl-C (or SIGTERM) again
    assert stopper.cancelling


def test_an_environment_failure_stops_at_the_first_and_keeps_its_reason() -> None:
    led = _ledger(max_failures=0)
    led.told(Told(0, "FAIL", None, {}, 0, "DataError: unreadable image /d/x.jpg"), FailureKind.ENVIRONMENT)
    led.told(Told(1, "FAIL", None, {}, 0, "DataError: unreadable image /d/y.jpg"), FailureKind.ENVIRONMENT)
    assert led.check(past_deadline=False, draining=False) is StopReason.ENVIRONMENT
    assert led.environment_failure == "DataError: unreadable image /d/x.jpg"
    assert led.failed_now == 0  # copies of the same failure spend no budget


def test_reaped_orphans_and_their_reruns() -> None:
    led = _ledger(target=3, COMPLETE=2, RUNNING=3)
    led.reaped(3, 1)
    assert led.counts["RUNNING"] == 1 and led.counts["FAIL"] == 3 and led.waiting == 1
    assert led.committed() == 3  # the rerun fills the target exactly


def test_half_done_retries_resumed_as_they_are_count_once() -> None:
    """Issue 18 (1): X and its retry Y were both RUNNING; X is told FAIL, Y runs as it is (no new trial)."""
    led = _ledger(target=3, COMPLETE=1, RUNNING=2)
    led.reaped(1, 0, 1)
    assert led.counts["RUNNING"] == 1 and led.counts["FAIL"] == 1 and led.waiting == 1
    led.reaped(0, 1)  # a trial a terminated sweep stopped (FAIL already) gets a new retry
    assert led.counts["RUNNING"] == 2 and led.counts["FAIL"] == 1 and led.waiting == 2
