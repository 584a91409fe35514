"""A trial's creation survives a lost commit answer: exactly one trial per creation token.

The fault is injected below Optuna and hpo, on the wire: the coordinator's storage talks to PostgreSQL through
``tests.tcpproxy.CommitDropProxy``, which lets the creating transaction's ``COMMIT`` reach the server, waits
for the server's answer and then cuts the connection, so the trial is committed and the client sees a lost
connection. Optuna's ``RDBStorage._create_new_trial`` used to retry that itself and create a second trial with
the same token (a param-less RUNNING trial left behind); an enqueued trial taken from the queue had no token,
so hpo's own retry could not find it and asked a fresh one beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.coordinator.coordinator import Coordinator
from hpo.coordinator.messages import FailureKind, Outcome
from hpo.coordinator.writes import TOKEN_KEY
from storage import close_storage, open_storage
from tests.fixtures_files import coordinator_settings
from tests.tcpproxy import CommitDropProxy

pytestmark = pytest.mark.postgres

NEW_TRIAL = rb"INSERT INTO trials \("
TAKE_WAITING = rb"UPDATE trials SET state="


@pytest.fixture
def proxy(pg_url: str) -> Iterator[CommitDropProxy]:
    url = sqlalchemy.engine.make_url(pg_url)
    with CommitDropProxy((url.host or "127.0.0.1", url.port or 5432)) as p:
        yield p


def _through(pg_url: str, proxy: CommitDropProxy) -> str:
    url = sqlalchemy.engine.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


def _coordinator(pg_url: str, proxy: CommitDropProxy, tmp_path: Path, enqueue: dict[str, Any] | None = None) -> Any:
    storage = open_storage(pg_url)
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    if enqueue is not None:
        study.enqueue_trial(enqueue)
    close_storage(storage)
    settings = coordinator_settings(
        _through(pg_url, proxy), "t", tmp_path / "runs", sampler="random", seed=1, retry_timeout=30.0
    )
    return Coordinator(settings)


def _trials(pg_url: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(pg_url, create_schema=False)
    try:
        return optuna.load_study(study_name="t", storage=storage).get_trials()
    finally:
        close_storage(storage)


def test_a_new_trial_whose_commit_answer_is_lost_exists_once_with_its_params(
    pg_url: str, proxy: CommitDropProxy, tmp_path: Path
) -> None:
    coord = _coordinator(pg_url, proxy, tmp_path)
    try:
        proxy.arm(NEW_TRIAL)
        asked = coord.ask()
    finally:
        coord.close()
    assert proxy.dropped == 1  # the fault did happen: the commit landed, its answer was lost
    trials = _trials(pg_url)
    assert [t._trial_id for t in trials] == [asked.trial_id], [(t.number, t.params) for t in trials]
    (trial,) = trials
    assert trial.state == TrialState.RUNNING and trial.params == asked.params and "lr" in trial.params
    assert trial.system_attrs.get(TOKEN_KEY)


def test_an_enqueued_trial_whose_commit_answer_is_lost_is_taken_once_with_its_token(
    pg_url: str, proxy: CommitDropProxy, tmp_path: Path
) -> None:
    coord = _coordinator(pg_url, proxy, tmp_path, enqueue={"lr": 0.01})
    try:
        proxy.arm(TAKE_WAITING)
        asked = coord.ask()
    finally:
        coord.close()
    assert proxy.dropped == 1
    trials = _trials(pg_url)
    assert [t._trial_id for t in trials] == [asked.trial_id], [(t.number, t.state, t.params) for t in trials]
    (trial,) = trials
    assert trial.state == TrialState.RUNNING and trial.params == {"lr": 0.01} == asked.params
    assert trial.system_attrs.get(TOKEN_KEY)


def test_a_retry_whose_commit_answer_is_lost_exists_once(pg_url: str, proxy: CommitDropProxy, tmp_path: Path) -> None:
    coord = _coordinator(pg_url, proxy, tmp_path)
    try:
        asked = coord.ask()
        proxy.arm(NEW_TRIAL)
        _, retry = coord.fail_and_retry(asked.trial_id, Outcome.fail(FailureKind.INFRA, "worker died: SIGKILL"))
    finally:
        coord.close()
    assert proxy.dropped == 1
    trials = _trials(pg_url)
    assert [t._trial_id for t in trials] == [asked.trial_id, retry.trial_id]
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.RUNNING
    assert trials[1].params == trials[0].params
