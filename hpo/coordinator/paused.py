"""The coordinator's bookkeeping of paused trials (``pruner: {type: asha}``): the promotion state
(``hpo.coordinator.promotion``), and where each paused trial is (its id, epoch, checkpoint folder). Pure, but
for the sizes of checkpoint folders and their removal.

A paused trial is Optuna state WAITING with the system attr ``hpo:paused`` (the epoch it paused at) and the
user attr ``paused_at_epoch``; its intermediate values stay. It is resumed in place: the same trial set back to
RUNNING, run again with its own checkpoint folder, so ``fit`` replays the saved epochs and goes on. A paused
trial that can no longer be promoted, every one left at the end of a sweep, and the least promising ones
while their checkpoints take more than ``pruner.max_paused_gb``, are told PRUNED and their checkpoints
deleted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial

from hpo import study as studies
from hpo.coordinator.promotion import PAUSE, PromotionRule, PromotionState, Record
from trials import storage_fs
from trials.paths import CHECKPOINT_NAME


@dataclass(frozen=True)
class PausedTrial:
    """Where a paused trial is: enough to resume it, or to give it up."""

    trial_id: int
    number: int
    epoch: int  # the last epoch it trained, where it paused
    checkpoint_dir: str | None
    values: dict[int, float] = field(default_factory=dict)  # its intermediate values (the primary metric)


@dataclass
class Promotions:
    """One sweep's asha state: ``PromotionState`` plus the paused trials' whereabouts."""

    state: PromotionState
    max_bytes: int | None = None
    stored: dict[int, PausedTrial] = field(default_factory=dict)  # number -> paused, WAITING in the study

    @classmethod
    def new(cls, rule: PromotionRule, direction: str, max_steps: int, max_bytes: int | None) -> Promotions:
        return cls(rule.new_state(direction, max_steps), max_bytes)

    def load(self, trials: Iterable[FrozenTrial]) -> None:
        """The study's trials (with their curves): every rung value, and the paused trials."""
        records = []
        for t in trials:
            values = studies.curve(t)
            paused = studies.is_paused(t)
            records.append(Record(t.number, values, t.state.name, paused))
            if paused:
                epoch = int(t.system_attrs[studies.SYS_PAUSED])
                ckpt = t.user_attrs.get(studies.ATTR_CHECKPOINT_DIR)
                self.stored[t.number] = PausedTrial(t._trial_id, t.number, epoch, ckpt, values)
        self.state.load(records)

    def started(self, number: int) -> None:
        """A trial was asked or resumed: until it reports, it may still reach every rung from its next one."""
        self.state.running.setdefault(number, 0)

    def report(self, number: int, values: Mapping[int, float]) -> bool:
        """Trial ``number`` reported (``values``: all its values so far): whether it is to pause now."""
        return self.state.report(number, values) == PAUSE

    def paused(self, trial: PausedTrial) -> None:
        """The trial was stored paused (WAITING): it may be resumed from now on."""
        self.stored[trial.number] = trial
        if trial.number not in self.state.paused:  # paused by a decision this state did not make
            self.state.paused[trial.number] = max(
                (i for i, step in enumerate(self.state.steps) if step <= trial.epoch), default=0
            )

    def next(self) -> PausedTrial | None:
        """The paused trial to resume now (stored paused: its worker has returned), or None."""
        number = self.state.next_promotion()
        return None if number is None else self.stored.get(number)

    def resumed(self, number: int) -> PausedTrial:
        self.state.resumed(number)
        return self.stored.pop(number)

    def finished(self, number: int) -> None:
        self.state.finished(number)
        self.stored.pop(number, None)

    def to_give_up(self, new_trials: float, *, everything: bool = False) -> list[tuple[PausedTrial, str]]:
        """Paused trials to tell PRUNED now, each with the reason: all of them (``everything``: the sweep ended),
        else those no future can promote with at most ``new_trials`` more trials, then the least promising while
        the stored ones' checkpoints take more than ``max_bytes``."""
        out: list[tuple[PausedTrial, str]] = []
        if everything:
            numbers = sorted(self.stored)
        else:
            numbers = [n for n in self.state.hopeless(new_trials) if n in self.stored]
        for n in numbers:
            out.append((self.stored[n], f"paused at epoch {self.stored[n].epoch}, not promoted"))
        if everything or self.max_bytes is None:
            return out
        gone = {p.number for p, _ in out}
        left = [n for n in self.state.least_promising() if n in self.stored and n not in gone]
        used = sum(checkpoint_bytes(self.stored[n].checkpoint_dir) for n in left)
        for n in left:
            if used <= self.max_bytes:
                break
            p = self.stored[n]
            used -= checkpoint_bytes(p.checkpoint_dir)
            out.append((p, f"paused at epoch {p.epoch}, its checkpoint given up (pruner.max_paused_gb)"))
        return out


def pruned_value(values: Mapping[int, float]) -> float | None:
    """The value a PRUNED trial records, as Optuna's tell does: its last intermediate value, when finite."""
    if not values:
        return None
    last = values[max(values)]
    return last if math.isfinite(last) else None


def checkpoint_bytes(folder: str | None) -> int:
    """The bytes of a trial's checkpoint folder, a local path or a URL (0 when there is none)."""
    return storage_fs.folder_bytes(folder)


def remove_checkpoint(folder: str | None) -> None:
    """Delete a given-up trial's checkpoint, and its folder when nothing else is left in it."""
    if not folder:
        return
    storage_fs.remove(storage_fs.join(folder, CHECKPOINT_NAME))
    storage_fs.remove_if_empty(folder)
