"""``hpo trials``, ``hpo best``, ``hpo delete`` and ``hpo stop`` (its request side) through the real CLI on a real
PostgreSQL: studies written with Optuna's own API, as a sweep leaves them (hpo's attrs, a paused trial, a lease)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo import study as studies
from hpo.sweep import lease
from hpo.sweep.stop import STOP_KEY
from hpo.views.delete import checkpoint_folders
from hpo.views.export import export_best
from storage import close_storage, opened
from tests.conftest import run_cli

SPACE = {"lr": FloatDistribution(1e-4, 1.0, log=True), "batch_size": CategoricalDistribution([16, 32])}


def _study(url: str, name: str, root: Path | None = None) -> None:
    """Trials 0-7: COMPLETE 0.5, 0.9, 0.9 (a tie: trial 1 is best), FAIL with a reason, PRUNED, RUNNING, an
    asha-paused WAITING trial and an enqueued WAITING one; each records its training config and folder."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    for i, outcome in enumerate([0.5, 0.9, 0.9, "fail", "pruned", "running", "paused"]):
        t = study.ask(SPACE)
        t.set_user_attr(studies.ATTR_TRAIN_CONFIG, {"epochs": 3, "lr": t.params["lr"], "model": "resnet18"})
        if root is not None:
            t.set_user_attr(studies.ATTR_CHECKPOINT_DIR, str(root / name / f"trial-{i:05d}"))
            (root / name / f"trial-{i:05d}").mkdir(parents=True)
        if outcome == "fail":
            t.set_user_attr(studies.ATTR_FAIL_REASON, "worker died")
            study.tell(t, state=TrialState.FAIL)
        elif outcome == "pruned":
            study.tell(t, state=TrialState.PRUNED)
        elif outcome == "paused":  # as asha leaves it: WAITING, with the system attr
            study._storage.set_trial_system_attr(t._trial_id, studies.SYS_PAUSED, 1)
            study._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
        elif outcome != "running":
            study.tell(t, float(outcome))  # type: ignore[arg-type]
    study.enqueue_trial({"lr": 0.01, "batch_size": 16})
    close_storage(study._storage)


def _json(r: Any) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_trials_lists_every_state_filters_and_limits(pg_url: str) -> None:
    _study(pg_url, "t")
    every = _json(run_cli("trials", "--study", "t", "--storage", pg_url, "--json"))
    assert [t["state"] for t in every["trials"]] == [
        "COMPLETE",
        "COMPLETE",
        "COMPLETE",
        "FAIL",
        "PRUNED",
        "RUNNING",
        "PAUSED",
        "WAITING",
    ]
    assert every["total"] == every["matched"] == 8
    assert every["trials"][3]["reason"] == "worker died"
    assert set(every["trials"][0]["params"]) == {"lr", "batch_size"}

    some = _json(run_cli("trials", "--study", "t", "-s", pg_url, "--state", "complete,fail", "--limit", "2", "--json"))
    assert [(t["number"], t["state"]) for t in some["trials"]] == [(2, "COMPLETE"), (3, "FAIL")]
    assert some["matched"] == 4
    paused = _json(run_cli("trials", "--study", "t", "-s", pg_url, "--state", "paused", "--state", "WAITING", "--json"))
    assert [(t["number"], t["state"]) for t in paused["trials"]] == [(6, "PAUSED"), (7, "WAITING")]

    table = run_cli("trials", "--study", "t", "-s", pg_url, env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "PAUSED" in table.stdout and "worker died" in table.stdout

    bad = run_cli("trials", "--study", "t", "-s", pg_url, "--state", "done")
    assert bad.returncode == 2 and "'done' is not a trial state" in bad.stderr
    missing = run_cli("trials", "--study", "nope", "-s", pg_url)
    assert missing.returncode == 2 and "study 'nope' not found (studies in this storage: t)" in missing.stderr


def test_best_is_the_trial_export_exports(pg_url: str, tmp_path: Path) -> None:
    _study(pg_url, "b")
    got = _json(run_cli("best", "--study", "b", "--storage", pg_url, "--json"))
    exported = export_best(pg_url, "b", tmp_path / "best.yaml")
    assert got["number"] == exported.trial == 1  # the earlier of the two tied trials
    assert got["value"] == 0.9 and got["metric"] == "val_acc" and got["direction"] == "maximize"
    assert got["train_config"]["epochs"] == 3 and got["train_config"]["lr"] == got["params"]["lr"]
    assert len(run_cli("best", "--study", "b", "-s", pg_url, "--json").stdout.strip().splitlines()) == 1

    plain = run_cli("best", "--study", "b", "-s", pg_url)
    assert plain.returncode == 0 and "best trial of study b: 1 (val_acc=0.9)" in plain.stdout


def test_best_of_a_multi_objective_study_is_exports_pick_from_the_front(pg_url: str, tmp_path: Path) -> None:
    study = optuna.create_study(study_name="m", storage=pg_url, directions=["maximize", "minimize"])
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    study.set_user_attr(studies.ATTR_OBJECTIVES, ["val_acc", "latency_ms"])
    # trial 2 has the best accuracy but is dominated by nothing; trial 3 dominates trial 0
    for acc, latency in [(0.5, 9.0), (0.7, 3.0), (0.95, 8.0), (0.6, 2.0)]:
        t = study.ask(SPACE)
        t.set_user_attr(studies.ATTR_TRAIN_CONFIG, {"epochs": 2, "lr": t.params["lr"]})
        study.tell(t, [acc, latency])
    close_storage(study._storage)
    got = _json(run_cli("best", "--study", "m", "-s", pg_url, "--json"))
    assert got["number"] == export_best(pg_url, "m", tmp_path / "b.yaml").trial == 2
    assert got["values"] == {"val_acc": 0.95, "latency_ms": 8.0}


def test_best_without_a_finished_trial_is_one_line_and_exit_2(pg_url: str) -> None:
    study = optuna.create_study(study_name="e", storage=pg_url, direction="maximize")
    study.tell(study.ask(SPACE), state=TrialState.PRUNED)
    close_storage(study._storage)
    r = run_cli("best", "--study", "e", "-s", pg_url, "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: study 'e' has no COMPLETE trial with a value yet; no best trial"]


def _hold(url: str, name: str) -> lease.Lease:
    """A live lease on study ``name``, held by this (running) process as a sweep's driver holds it."""
    mine = lease.new_lease()
    with opened(url) as storage:
        assert lease.acquire(url, storage, storage.get_study_id_from_name(name), mine) is None
    return mine


def _system_attrs(url: str, name: str) -> dict[str, Any]:
    with opened(url) as storage:
        return dict(storage.get_study_system_attrs(storage.get_study_id_from_name(name)))


def test_delete_refuses_without_yes_and_while_a_sweep_holds_the_study(pg_url: str, tmp_path: Path) -> None:
    _study(pg_url, "d", root=tmp_path / "runs")
    r = run_cli("delete", "--study", "d", "-s", pg_url, "--checkpoints")
    assert r.returncode == 2 and "would delete study 'd' (8 trials) and its checkpoint folders; pass --yes" in r.stderr
    mine = _hold(pg_url, "d")
    busy = run_cli("delete", "--study", "d", "-s", pg_url, "--yes")
    assert busy.returncode == 2 and "is being run by an hpo sweep" in busy.stderr and "hpo stop" in busy.stderr
    assert (tmp_path / "runs" / "d" / "trial-00000").is_dir()
    with opened(pg_url) as storage:
        lease.release(pg_url, storage, storage.get_study_id_from_name("d"), mine["owner"])

    other = tmp_path / "runs" / "keep"
    other.mkdir()
    done = run_cli("delete", "--study", "d", "-s", pg_url, "--checkpoints", "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted study 'd' (8 trials)" in done.stdout and f"removed {tmp_path / 'runs' / 'd'}" in done.stdout
    assert not (tmp_path / "runs" / "d").exists() and other.is_dir()
    gone = run_cli("trials", "--study", "d", "-s", pg_url)
    assert gone.returncode == 2 and "not found" in gone.stderr


def test_delete_without_checkpoints_leaves_the_folders(pg_url: str, tmp_path: Path) -> None:
    _study(pg_url, "k", root=tmp_path)
    r = run_cli("delete", "--study", "k", "-s", pg_url, "-y")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k" / "trial-00000").is_dir() and "removed" not in r.stdout


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        (["/r/s/trial-00000", "/r/s/trial-00001"], ["/r/s"]),
        (["/r/s/trial-00000", "/elsewhere/x"], ["/r/s", "/elsewhere/x"]),
        (["/r/other/trial-00000"], ["/r/other/trial-00000"]),  # not under a folder named after the study
        (["s3://bucket/s/trial-00000"], ["s3://bucket/s/trial-00000"]),
        ([], []),
    ],
)
def test_checkpoint_folders(recorded: list[str], expected: list[str]) -> None:
    assert checkpoint_folders(recorded, "s") == expected


def test_stop_writes_a_request_only_for_a_running_sweep(pg_url: str) -> None:
    _study(pg_url, "st")
    idle = run_cli("stop", "--study", "st", "-s", pg_url)
    assert idle.returncode == 0 and "no hpo sweep is running study 'st'; nothing to stop" in idle.stdout
    assert STOP_KEY not in _system_attrs(pg_url, "st")

    mine = _hold(pg_url, "st")
    asked = run_cli("stop", "--study", "st", "-s", pg_url)
    assert asked.returncode == 0, asked.stderr
    assert "asked the sweep on study 'st'" in asked.stdout and f"pid {mine['pid']}" in asked.stdout
    request = _system_attrs(pg_url, "st")[STOP_KEY]
    assert request["owner"] == mine["owner"] and request["pid"] != mine["pid"]

    missing = run_cli("stop", "--study", "nope", "-s", pg_url)
    assert missing.returncode == 2 and "study 'nope' not found" in missing.stderr
