"""``hpo verify``'s reproduction rule (issue 19, item 6): a tolerance from the validation set's size and the
seeds' spread, one-sided (better than the trial is reproduced), and the winner's curse of picking the best of
a study's trials. Pure functions, by tables of real cases; plus the study's completed values read from a real
SQLite study."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from hpo.verify import (
    Arm,
    Direction,
    Run,
    Verdict,
    completed_values,
    contenders,
    expected_max_normal,
    judge,
    reproduces,
    reproduction_lines,
    run_noise_sd,
    tolerance_band,
)
from storage import close_storage, open_storage

#: The real-photo case of issue 19: 200 face / non-face photos, 32 val images (one image is 3.1 pp). Trial 9
#: recorded 0.9688; seeds 0, 1, 2 retrained to 0.9688, 0.9062, 0.9688.
FACES = [0.9688, 0.9062, 0.9688]


def verdict(
    vals: list[float],
    trial_value: float,
    n_val: int | None,
    *,
    study_values: tuple[float, ...] | None = None,
    metric: str = "val_acc",
    floor: float = 0.01,
) -> Verdict:
    def runs(arm: Arm, values: list[float]) -> list[Run]:
        return [Run(arm, seed, v, 0.9, "completed", 3, n_val) for seed, v in enumerate(values)]

    return Verdict(
        metric=metric,
        direction="maximize" if metric == "val_acc" else "minimize",
        seeds=list(range(len(vals))),
        tuned=runs("tuned", vals),
        baseline=runs("baseline", [0.8] * len(vals)),
        baseline_source="defaults",
        study="faces",
        trial=9,
        trial_value=trial_value,
        tolerance=floor,
        study_values=study_values,
        study_note=None if study_values is not None else "study 'faces' not read: no such file",
    )


# ---------------------------------------------------------------- the parts


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0.0), (1, 0.0), (2, 0.5642), (3, 0.8463), (5, 1.1630), (10, 1.5388), (100, 2.5076)]
)
def test_expected_max_of_n_standard_normals_matches_the_table(n: int, expected: float) -> None:
    assert expected_max_normal(n) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("metric", "value", "n_val", "seeds_sd", "expected"),
    [
        ("val_acc", 0.9688, 32, 0.0, math.sqrt(0.9688 * 0.0312 / 32)),  # one seed: the binomial SE alone
        ("val_acc", 0.9688, 32, 0.05, 0.05),  # seeds spread wider than the binomial SE: theirs
        ("val_acc", 0.9688, None, 0.02, 0.02),  # val size unknown: the seeds alone
        ("val_acc", 1.0, 32, 0.0, 0.0),  # p = 1: no binomial spread (the one-image floor still holds)
        ("val_loss", 0.3, 32, 0.01, 0.01),  # a loss: the seeds alone
    ],
)
def test_one_runs_noise(metric: str, value: float, n_val: int | None, seeds_sd: float, expected: float) -> None:
    assert run_noise_sd(metric, value, n_val, seeds_sd) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("metric", "sd", "k", "n_val", "floor", "expected", "source"),
    [
        ("val_acc", 0.03, 3, 32, 0.01, 1.96 * 0.03 * math.sqrt(4 / 3), "95% band"),
        ("val_acc", 0.0, 3, 32, 0.01, 1 / 32, "one val image"),  # never below one image
        ("val_acc", 0.0, 3, 10000, 0.01, 0.01, "--tolerance"),  # a large val set: the floor
        ("val_loss", 0.0, 1, 32, 0.02, 0.02, "--tolerance"),  # a loss, one seed: the floor
        ("val_loss", 0.01, 1, None, 0.0, 1.96 * 0.01 * math.sqrt(2), "95% band"),
    ],
)
def test_tolerance_band_and_where_it_comes_from(
    metric: str, sd: float, k: int, n_val: int | None, floor: float, expected: float, source: str
) -> None:
    tolerance, where = tolerance_band(metric, sd, k, n_val, floor)
    assert tolerance == pytest.approx(expected, abs=1e-4) and where == source


@pytest.mark.parametrize(
    ("values", "trial", "sd", "direction", "expected"),
    [
        ([0.97, 0.94, 0.90, 0.60], 0.97, 0.02, "maximize", 2),  # 0.97 and 0.94 are within 0.04 of 0.97
        ([0.97, 0.96, 0.95, 0.94], 0.97, 0.02, "maximize", 4),
        ([0.97, 0.99], 0.97, 0.02, "maximize", 0),  # another trial beat it: not selected as the best
        ([0.30, 0.31, 0.50], 0.30, 0.01, "minimize", 2),  # a loss: lower is better
        ([], 0.97, 0.02, "maximize", 0),  # no completed trial read
        ([0.97], 0.97, 0.0, "maximize", 1),
    ],
)
def test_contenders_are_the_trials_within_two_noise_sd(
    values: list[float], trial: float, sd: float, direction: Direction, expected: int
) -> None:
    assert contenders(values, trial, sd, direction) == expected


def test_reproduces_is_one_sided() -> None:
    assert reproduces([0.99, 0.98], 0.96, 0.01)  # better than the trial by 2.5 pp: reproduced
    assert not reproduces([0.93, 0.94], 0.96, 0.01)
    assert reproduces([0.25, 0.26], 0.30, 0.01, "minimize")  # a lower loss is better
    assert not reproduces([0.35, 0.36], 0.30, 0.01, "minimize")


# ---------------------------------------------------------------- the verdicts of issue 19


def test_the_face_photo_case_is_reproduced() -> None:
    """32 val images, one is 3.1 pp: seed 1's 2 images fewer is noise, not a failed reproduction."""
    rep = judge("val_acc", "maximize", FACES, 0.9688, n_val=32, floor=0.01, study_values=None)
    assert rep.reproduced and not rep.better
    assert rep.shortfall == pytest.approx(0.0209, abs=1e-4)
    assert rep.seeds_sd == pytest.approx(0.0361, abs=1e-4) and rep.noise_sd == rep.seeds_sd
    assert rep.tolerance == pytest.approx(1.96 * 0.0361 * math.sqrt(4 / 3), abs=1e-3)  # 0.0818
    assert rep.tolerance_from == "95% band" and rep.optimism == 0.0 and rep.n_trials is None
    assert not reproduces(FACES, 0.9688, 0.01)  # what the fixed 1 pp said


def test_the_face_photo_case_with_the_studys_trials_counts_the_winners_curse() -> None:
    study = (0.9688, 0.9375, 0.9375, 0.9062, 0.90, 0.85, 0.70, 0.50)  # 8 trials, 5 within 2 sd of the best
    rep = judge("val_acc", "maximize", FACES, 0.9688, n_val=32, floor=0.01, study_values=study)
    assert rep.reproduced and rep.n_trials == 8 and rep.contenders == 5
    assert rep.optimism == pytest.approx(rep.noise_sd * 1.1630, abs=1e-4)
    lines = reproduction_lines(verdict(FACES, 0.9688, 32, study_values=study))
    assert "expected optimism of the best of 8 trials: ~0.0420" in lines[2]
    assert "judged against 0.9268" in lines[2]  # 0.9688 - 0.0420


def test_a_clearly_off_reproduction_is_not_reproduced() -> None:
    """An lr x100 that stays at chance: 0.5 against a recorded 0.98 on 57 val images."""
    rep = judge("val_acc", "maximize", [0.5, 0.5], 0.98, n_val=57, floor=0.01, study_values=(0.98, 0.97, 0.6))
    assert not rep.reproduced and rep.shortfall == pytest.approx(0.48)
    assert rep.optimism + rep.tolerance < 0.1
    # a large val set, seeds close together, 5 pp under the trial: off too
    rep = judge("val_acc", "maximize", [0.90, 0.905, 0.895], 0.95, n_val=1000, floor=0.01, study_values=None)
    assert not rep.reproduced
    assert rep.tolerance == pytest.approx(1.96 * math.sqrt(0.95 * 0.05 / 1000) * math.sqrt(4 / 3), abs=1e-5)


def test_better_than_the_trial_is_reproduced() -> None:
    """The 3-seed mean 1.4 pp above the trial's value: reproduced, and said so."""
    v = verdict([0.98, 0.99, 0.975], 0.968, 32, study_values=(0.968, 0.95))
    rep = v.reproduction
    assert rep.reproduced and rep.better and rep.shortfall == pytest.approx(-0.0137, abs=1e-4)
    assert v.to_dict()["reproduced"] is True and v.to_dict()["reproduction"]["better_than_trial"] is True
    assert reproduction_lines(v)[0].startswith("reproduced: yes (better than the trial by 0.0137), ")


def test_a_loss_is_judged_the_other_way() -> None:
    rep = judge("val_loss", "minimize", [0.30, 0.32, 0.31], 0.29, n_val=32, floor=0.01, study_values=(0.29, 0.31))
    assert rep.reproduced and rep.noise_sd == pytest.approx(0.01) and rep.contenders == 2
    assert rep.tolerance_from == "95% band"  # a loss has no one-image floor
    rep = judge("val_loss", "minimize", [0.60, 0.62], 0.29, n_val=32, floor=0.01, study_values=None)
    assert not rep.reproduced
    rep = judge("val_loss", "minimize", [0.25], 0.29, n_val=32, floor=0.01, study_values=None)
    assert rep.reproduced and rep.better and rep.tolerance == 0.01  # one seed: the floor


def test_a_diverged_seed_never_reproduces() -> None:
    rep = judge("val_acc", "maximize", [0.97, math.nan], 0.97, n_val=32, floor=0.01, study_values=None)
    assert not rep.reproduced
    lines = reproduction_lines(verdict([0.97, math.nan], 0.97, 32))
    assert lines[0].startswith("reproduced: NO, mean retrained val_acc n/a")


def test_the_verdict_lines_carry_every_figure() -> None:
    v = verdict(FACES, 0.9688, 32)
    first, tolerance, curse = reproduction_lines(v)
    assert first.startswith("reproduced: yes, mean retrained val_acc 0.9479 over seeds 0, 1, 2 ")
    assert "(0.9688, 0.9062, 0.9688; sd 0.0361) vs trial 9's recorded 0.9688: 0.0209 below it" in first
    assert "allowed 0.0818 = winner's curse 0.0000 + tolerance 0.0818" in first
    assert tolerance.startswith("  tolerance 0.0818 from the 95% band")
    assert "one val image 0.0312" in tolerance and "--tolerance 0.0100" in tolerance
    assert "binomial SE 0.0307, 32 val images" in tolerance
    assert curse == "  winner's curse: not estimated (study 'faces' not read: no such file)"
    doc = v.to_dict()
    assert doc["tolerance"] == pytest.approx(0.0818, abs=1e-4) and doc["reproduction"]["tolerance_floor"] == 0.01
    assert doc["reproduction"]["n_val"] == 32 and doc["reproduction"]["n_trials"] is None
    assert set(doc["reproduction"]) == {
        "shortfall",
        "seeds_sd",
        "n_val",
        "noise_sd",
        "tolerance_from",
        "tolerance_floor",
        "optimism",
        "n_trials",
        "contenders",
        "better_than_trial",
    }


def test_a_trial_that_is_not_the_best_gets_no_winners_curse() -> None:
    lines = reproduction_lines(verdict(FACES, 0.9688, 32, study_values=(0.9688, 0.99)))
    assert "not the best of the study's 2 completed trials" in lines[2]
    assert "holds no completed trial" in reproduction_lines(verdict(FACES, 0.9688, 32, study_values=()))[2]


# ---------------------------------------------------------------- the study's values, from a real storage


def test_completed_values_are_read_from_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name="faces", storage=storage, direction="maximize")
        for value in (0.9, 0.95):
            study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={}, distributions={}))
    finally:
        close_storage(storage)
    assert completed_values(url, "faces") == ((0.9, 0.95), None)
    values, note = completed_values(url, "other")
    assert values is None and note is not None and "study 'other' not read" in note
    values, note = completed_values(f"sqlite:///{tmp_path / 'missing.db'}", "faces")
    assert values is None and note is not None and "no such file" in note
    assert not (tmp_path / "missing.db").exists()  # nothing created
