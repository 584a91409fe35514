"""The learning-curve benchmark (benchmarks/curves): configs, a real recording, the replay and its report."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks.common import REPO
from benchmarks.curves import arms, data, record, replay, sim, stats, tasks
from hpo.coordinator.promotion import PromotionRule


def test_configs_are_fixed_and_in_the_default_space() -> None:
    from hpo.space import DEFAULT_SPACE

    first = tasks.configs(40)
    assert tasks.configs(8) == first[:8]  # extending the list keeps its prefix: recorded runs stay valid
    for params in first:
        assert set(params) == set(DEFAULT_SPACE)
        for name, spec in DEFAULT_SPACE.items():
            if "choices" in spec:
                assert params[name] in spec["choices"]
            else:
                assert spec["low"] <= params[name] <= spec["high"]


def test_task_split_is_the_protocols() -> None:
    assert set(tasks.TUNING).isdisjoint(tasks.CLAIM)
    assert len(tasks.CLAIM) >= 4 and tasks.APART == ("lfw",)
    text = (Path(tasks.__file__).parent / "PROTOCOL.md").read_text()
    for name in tasks.ALL:
        assert f"| {name} |" in text


def test_paired_interval_matches_scipy() -> None:
    from scipy import stats as sps

    a, b = [0.5, 0.7, 0.65, 0.9, 0.4], [0.45, 0.5, 0.6, 0.7, 0.42]
    p = stats.paired(a, b)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    low, high = sps.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / 5, scale=sps.sem(diffs))
    assert p.low == pytest.approx(low) and p.high == pytest.approx(high)
    assert stats.Paired(5, 1.0, 0.2, 1.8).verdict() == "win"
    assert stats.Paired(5, -1.0, -1.8, -0.2).verdict() == "loss"
    assert stats.Paired(5, 0.1, -0.2, 0.4).verdict() == "tie"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> data.TaskCurves:
    """Four real runs of the lfw task (4 epochs each), recorded as ``record`` records them."""
    root = tmp_path_factory.mktemp("curves")
    task = tasks.task("lfw")
    configs = tasks.configs()
    lines = [record.record_one(task, i, configs[i], 0, 1, epochs=4) for i in range(3)]
    lines.append(record.record_one(task, 0, configs[0], 1, 1, epochs=4))
    (root / "lfw.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return data.load("lfw", root)


def test_recorded_curves_have_val_test_and_seconds(recorded: data.TaskCurves) -> None:
    assert recorded.epochs == 4 and sorted(recorded.runs) == [0, 1, 2] and len(recorded.runs[0]) == 2
    for runs in recorded.runs.values():
        for run in runs:
            assert all(0.0 <= v <= 1.0 for v in run.val + run.test)
            assert all(s > 0 for s in run.seconds)
    # two training seeds of one config train differently: the replay carries training noise
    assert recorded.runs[0][0].val != recorded.runs[0][1].val
    assert 0.0 <= recorded.random_test <= recorded.oracle_test <= 1.0
    err = replay.surrogate_error(recorded)
    assert err["configs"] == 3 and err["seeded"] == 1 and math.isfinite(err["nearest_mae_pp"])


def test_nearest_recorded_config_is_the_surrogate(recorded: data.TaskCurves) -> None:
    for c in recorded.runs:
        assert recorded.nearest(recorded.params[c]) == c
        assert recorded.nearest(recorded.params[c], exclude=c) != c


@pytest.mark.parametrize(
    "name", ["hpo-nopruning", "hpo-median", "hpo-asha2", "optuna-tpe-median", "syne-asha", "ray-tune-asha"]
)
def test_replay_runs_every_kind_of_arm(recorded: data.TaskCurves, name: str) -> None:
    arm = replay.all_arms()[name]
    trace = sim.replay(recorded, arm.searcher(0, 6, recorded.epochs, 2), seed=0, workers=2)
    assert trace.trials == 6
    assert 0 < trace.epochs <= 6 * recorded.epochs
    assert trace.compute > 0 and trace.wall > 0
    assert trace.improvements, "at least one trial completes"
    assert [c for c, _ in trace.improvements] == sorted(c for c, _ in trace.improvements)


def test_replay_is_deterministic_in_its_seed(recorded: data.TaskCurves) -> None:
    def one(seed: int) -> sim.Trace:
        arm = replay.all_arms()["hpo-default"]
        return sim.replay(recorded, arm.searcher(seed, 8, recorded.epochs, 2), seed=seed, workers=2)

    assert one(3) == one(3)


def test_promotion_arm_pauses_and_resumes_the_same_trial() -> None:
    """hpo's promotion rule as the replay drives it: a trial paused at its rung (WAITING in the study) is
    resumed once later trials make it top-1/eta there, as the same trial, its epochs continuing."""
    from optuna.trial import TrialState

    arm = arms.HpoArm("asha", rule=PromotionRule(min_resource=2, reduction_factor=2))
    s = arm.searcher(0, 4, 4, 2)

    def rung(value: float) -> tuple[sim.Job, str]:
        job = s.next_job()
        assert job is not None and job.done == 0, "a new trial"
        s.report(job, 1, value - 0.1)
        job.done = 2
        return job, s.report(job, 2, value)

    first, answer = rung(0.6)
    assert answer == "pause"  # alone at the rung: nobody is in its top half yet
    assert s.study.trials[0].state == TrialState.WAITING
    assert rung(0.9)[1] == "continue"  # the best of two
    assert rung(0.3)[1] == "pause"
    assert rung(0.2)[1] == "pause"  # four at the rung: the first trial (0.6) is now second, in the top half
    job = s.next_job()
    assert job is first and job.done == 2 and s.study.trials[0].state == TrialState.RUNNING
    assert s.report(job, 3, 0.7) == "continue" and s.report(job, 4, 0.7) == "continue"
    s.finished(job, "COMPLETE", 0.7)
    t0 = s.study.trials[0]
    assert t0.state == TrialState.COMPLETE and t0.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.7}
    assert s.next_job() is None  # the budget's four trials exist, and no paused trial is promotable


def test_promotion_arm_replays_to_the_end(recorded: data.TaskCurves) -> None:
    arm = arms.HpoArm("asha", rule=PromotionRule(min_resource=2, reduction_factor=2))
    searcher = arm.searcher(0, 8, recorded.epochs, 2)
    trace = sim.replay(recorded, searcher, seed=0, workers=2)
    assert trace.trials == 8
    assert "RUNNING" not in {t.state.name for t in searcher.study.trials}


def test_claim_summary_of_a_replay(recorded: data.TaskCurves) -> None:
    arm_names = ("hpo-default", "hpo-nopruning", "optuna-tpe-median")
    raw = {"lfw": {str(seed): replay.one_seed("lfw", seed, arm_names, recorded, n_trials=6) for seed in (0, 1, 2)}}
    for entry in raw["lfw"].values():
        assert entry["budget"] == entry["arms"]["hpo-nopruning"]["fixed_compute"]
        assert len(entry["arms"]["optuna-tpe-median"]["anytime_regret"]) == len(replay.FRACTIONS)
    summary = replay.claim_summary({"raw": raw}, ["optuna-tpe-median"])
    g1 = summary["pooled"]["G1"]
    assert g1["test_gap_pp"]["n"] == 3 and isinstance(g1["passed"], bool)
    rows = summary["pooled"]["G2"]["optuna-tpe-median"]
    assert [r["fraction"] for r in rows] == list(replay.FRACTIONS)
    assert all(r["verdict"] in ("win", "tie", "loss") for r in rows)
    assert summary["per_task"]["lfw"]["G1"] == g1  # one task: pooled is that task


def test_todays_trials_code_trains_a_recorded_run_as_the_recording_code_did(tmp_path: Path) -> None:
    """The recorded curves stand for ``trials/`` as it is now. The committed curves were trained by the code of
    the recording's commit (``meta.json``) on a backbone that ``make pretrain`` made then; ``make pretrain`` on
    today's code makes another one, so the curves cannot be compared with a run here directly. Instead one
    recorded run (its config and seed) is trained twice on this machine's backbone: by the recording's own
    code (``git archive`` of its commit, in a subprocess) and by today's, and the two curves must agree to
    within one image at every epoch (CPU training with one thread is deterministic). Then today's code, given
    the recording's backbone, trains what was recorded. A change to the training code that fails this must
    re-record the curves (``python -m benchmarks.curves record``)."""
    import subprocess
    import sys

    path = data.DATA / "shapes-tuning-few.jsonl"
    if not path.is_file():
        pytest.skip("no committed curves yet")
    meta = json.loads((data.DATA / "meta.json").read_text())
    row = json.loads(path.read_text().splitlines()[0])
    old_tree = tmp_path / "recording"
    old_tree.mkdir()
    archive = subprocess.run(["git", "archive", meta["commit"]], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"the recording's commit {meta['commit'][:8]} is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
    script = (
        "import json, sys\n"
        "from benchmarks.curves import record, tasks\n"
        "i, seed = int(sys.argv[2]), int(sys.argv[3])\n"
        "print(json.dumps(record.record_one(tasks.task(sys.argv[1]), i, tasks.configs()[i], seed, 1)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, row["task"], str(row["config"]), str(row["seed"])],
        cwd=old_tree,
        env={**os.environ, "PYTHONPATH": str(old_tree)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    then = json.loads(proc.stdout.strip().splitlines()[-1])
    task = tasks.task(row["task"])
    now = record.record_one(task, row["config"], tasks.configs()[row["config"]], row["seed"], 1)
    assert len(then["epochs"]) == len(now["epochs"]) == len(row["epochs"])
    one_val, one_test = 1 / row["n_val"] + 1e-9, 1 / 300 + 1e-9
    for a, b in zip(then["epochs"], now["epochs"], strict=True):
        assert abs(a["val_acc"] - b["val_acc"]) <= one_val, (a, b)
        assert abs(a["test_acc"] - b["test_acc"]) <= one_test, (a, b)


def test_the_committed_results_page_is_the_rendering_of_the_committed_results() -> None:
    """RESULTS.md is generated (``python -m benchmarks.curves report``), never edited by hand."""
    from benchmarks.curves import report

    assert report.RESULTS_MD.read_text() == report.render(), "regenerate: python -m benchmarks.curves report"
