"""``pruner: {type: asha}``: its config (defaults, one-line errors), the promotion decisions' edge cases
(``hpo.coordinator.promotion``), the coordinator's bookkeeping of paused trials (``hpo.coordinator.paused``),
and how a paused trial looks to the sampler and to hpo's ask (a real SQLite study)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import study as studies
from hpo.config import PrunerConfig, SweepConfig, load_sweep_config
from hpo.coordinator.paused import Promotions, checkpoint_bytes, pruned_value, remove_checkpoint
from hpo.coordinator.promotion import CONTINUE, PAUSE, PromotionRule, Record
from hpo.coordinator.sampling import _StudyView
from hpo.coordinator.settings import CoordinatorSettings
from hpo.coordinator.writes import Writes
from hpo.errors import ConfigError

BASE = "study: {name: p}\ntrain: {dataset: {type: digits}, epochs: 6, freeze_backbone_epochs: 1}\n"


# ---------------------------------------------------------------- config


def test_asha_is_one_line_of_config_with_its_defaults() -> None:
    cfg = SweepConfig.model_validate(
        {"study": {"name": "p"}, "pruner": {"type": "asha"}, "train": {"epochs": 6, "freeze_backbone_epochs": 2}}
    )
    assert cfg.pruner.rule() == PromotionRule(min_resource=3, reduction_factor=3)  # never a head-only epoch
    assert cfg.pruner.max_paused_gb == 10.0
    settings = CoordinatorSettings.from_config(cfg, parallel=1, lease=None)
    assert settings.rule == PromotionRule(3, 3) and settings.max_paused_bytes == 10 * 10**9
    assert SweepConfig().pruner.type == "median"  # the default stays


def test_asha_parameters_given() -> None:
    p = PrunerConfig.model_validate({"type": "asha", "min_resource": 2, "reduction_factor": 2, "max_paused_gb": None})
    assert p.rule() == PromotionRule(2, 2) and p.max_paused_gb is None  # null: no limit
    cfg = SweepConfig.model_validate({"pruner": p.model_dump(exclude_unset=True), "train": {"epochs": 6}})
    assert cfg.pruner.min_resource == 2 and cfg.pruner.max_paused_gb is None


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        ("{type: asha, reduction_factor: 1}", "pruner.reduction_factor: must be a whole number, at least 2, got 1"),
        ("{type: asha, min_resource: 0}", "pruner.min_resource: must be a whole number of epochs, at least 1, got 0"),
        ("{type: asha, min_resource: auto}", "pruner.min_resource: must be a whole number of epochs, at least 1"),
        ("{type: asha, max_paused_gb: 0}", "pruner.max_paused_gb: must be a number of gigabytes above 0"),
        ("{type: asha, max_paused_gb: -1}", "pruner.max_paused_gb: must be a number of gigabytes above 0"),
        ("{type: asha, percentile: 50}", "pruner.percentile: not a parameter of pruner type 'asha'"),
        ("{type: median, max_paused_gb: 5}", "pruner.max_paused_gb: not a parameter of pruner type 'median'"),
        ("{type: asha, min_resource: 6}", "pruner.min_resource: must be below train.epochs (6)"),
    ],
)
def test_bad_asha_settings_are_one_line_naming_the_field(tmp_path: Path, pruner: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + f"pruner: {pruner}\n")
    with pytest.raises(ConfigError) as e:
        load_sweep_config(path)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------- decisions


def test_the_first_trial_at_a_rung_pauses_and_is_promoted_once_a_worse_one_arrives() -> None:
    state = PromotionRule(2, 2).new_state("maximize", 5)  # rungs at epochs 2 and 4
    assert state.steps == [2, 4]
    assert state.report(0, {1: 0.5}) == CONTINUE  # not a rung
    assert state.report(0, {1: 0.5, 2: 0.9}) == PAUSE  # alone at the rung: nobody is promotable
    assert state.next_promotion() is None
    assert state.report(1, {2: 0.3}) == PAUSE  # worse
    assert state.next_promotion() == 0
    state.resumed(0)
    assert state.report(0, {1: 0.5, 2: 0.9}) == CONTINUE  # a replayed rung is recorded once, not ranked again
    assert state.population(0) == 2
    assert state.report(0, {2: 0.9, 3: 0.9, 4: 0.95}) == PAUSE  # alone at the second rung
    assert state.report(0, {2: 0.9, 4: 0.95, 5: 0.96}) == CONTINUE  # the last epoch is never a rung
    state.finished(0)
    assert 0 not in state.paused and 0 not in state.running


def test_ties_count_for_the_trial_and_nan_ranks_last() -> None:
    state = PromotionRule(1, 2).new_state("minimize", 3)
    assert state.report(0, {1: 0.4}) == PAUSE
    assert state.report(1, {1: 0.4}) == CONTINUE  # tied with the best: promotable (rank 0 < 2 // 2)
    assert state.report(2, {1: math.nan}) == PAUSE
    assert state.rank(2, 0) == 2


def test_a_study_loads_paused_and_running_trials() -> None:
    state = PromotionRule(2, 2).new_state("maximize", 5)
    state.load(
        [
            Record(0, {1: 0.5, 2: 0.9}, "WAITING", paused=True),
            Record(1, {1: 0.1, 2: 0.2}, "PRUNED"),
            Record(2, {1: 0.3}, "RUNNING"),
        ]
    )
    assert state.paused == {0: 0} and state.running == {2: 0}
    assert state.next_promotion() == 0  # 0.9 is the best of 2 values at the rung
    assert state.hopeless(math.inf) == []
    assert state.hopeless(0) == []  # it is promotable


def test_hopeless_and_least_promising() -> None:
    state = PromotionRule(1, 2).new_state("maximize", 3)
    for n, v in enumerate([0.9, 0.1, 0.2, 0.3]):
        state.report(n, {1: v})
    # 0 paused first (alone), 1 and 2 lost, 3 too (0.3 vs 0.9 at a population of 4: top 2 promotable)
    assert set(state.paused) >= {1, 2}
    assert state.hopeless(0) == [1, 2]  # rank 3 and 2 of 4, no trial can come: never in the top 2
    assert state.hopeless(10) == []  # ten more worse trials could still promote them
    assert state.least_promising()[0] == 1  # the worst share at the lowest rung gives its disk up first


# ---------------------------------------------------------------- the coordinator's bookkeeping


def test_promotions_give_up_the_least_promising_past_the_disk_budget(tmp_path: Path) -> None:
    promotions = Promotions.new(PromotionRule(1, 2), "maximize", 3, max_bytes=150)
    study = optuna.create_study(direction="maximize")
    asked = [study.ask() for _ in range(3)]  # before any is WAITING: Optuna's ask would take those
    for n, (v, t) in enumerate(zip([0.5, 0.1, 0.2], asked, strict=True)):
        folder = tmp_path / f"trial-{n}"
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x" * 100)
        study._storage.set_trial_intermediate_value(t._trial_id, 1, v)
        study._storage.set_trial_user_attr(t._trial_id, studies.ATTR_CHECKPOINT_DIR, str(folder))
        study._storage.set_trial_system_attr(t._trial_id, studies.SYS_PAUSED, 1)
        study._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
    promotions.load(study.get_trials(deepcopy=False))
    assert sorted(promotions.stored) == [0, 1, 2] and checkpoint_bytes(str(tmp_path / "trial-1")) == 100
    promoted = promotions.next()  # 0.5 is rank 0 of 3 values, and 3 // 2 = 1: promotable
    assert promoted is not None and promoted.number == 0 and promoted.epoch == 1
    gone = promotions.to_give_up(math.inf)  # no hopeless trial without a limit; the disk: 300 bytes > 150
    assert [(p.number, "max_paused_gb" in why) for p, why in gone] == [(1, True), (2, True)]
    everything = promotions.to_give_up(0, everything=True)
    assert [p.number for p, _ in everything] == [0, 1, 2]
    assert all("not promoted" in why for _, why in everything)
    remove_checkpoint(str(tmp_path / "trial-1"))
    assert not (tmp_path / "trial-1").exists()
    assert pruned_value({1: 0.5, 2: 0.7}) == 0.7 and pruned_value({1: math.nan}) is None


# ---------------------------------------------------------------- the study: sampler's view, hpo's ask


def test_a_paused_trial_is_pruned_to_the_sampler_and_never_taken_as_enqueued(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, direction="maximize")
    paused = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1)})
    study._storage.set_trial_intermediate_value(paused._trial_id, 1, 0.4)
    study._storage.set_trial_system_attr(paused._trial_id, studies.SYS_PAUSED, 1)
    study._storage.set_trial_state_values(paused._trial_id, TrialState.WAITING)
    study.enqueue_trial({"lr": 0.01})

    seen = _StudyView(study).get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    assert [(t.number, t.intermediate_values) for t in seen] == [(0, {1: 0.4})]
    assert study.trials[0].state == TrialState.WAITING  # the study itself is unchanged

    writes = Writes(study._storage)
    taken = writes.create_trial(study._study_id, "token-1", None, look_up=False)
    assert study._storage.get_trial(taken).number == 1  # the enqueued one, not the paused one
    fresh = writes.create_trial(study._study_id, "token-2", None, look_up=False)
    assert study._storage.get_trial(fresh).number == 2  # the queue is empty: a new trial
    assert studies.is_paused(study._storage.get_trial(paused._trial_id))
