"""Everything a coordinator needs to run one sweep's study, as one typed value built once by the driver.

Plain data: it travels to the coordinator's Ray actor as a whole (pickled), and tests and benchmarks build
one directly. ``from_config`` is the only place that reads a ``SweepConfig`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.coordinator.promotion import PromotionRule
from hpo.coordinator.pruning import PrunerRule

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from hpo.config import SweepConfig


@dataclass(frozen=True)
class CoordinatorSettings:
    storage_url: str
    study_name: str
    metric: str
    direction: str  # maximize | minimize
    distributions: dict[str, BaseDistribution]  # in sampling order: a condition's parameter first
    base_config: dict[str, Any]
    fixed_params: dict[str, Any]
    checkpoint_root: str
    sampler: str = "tpe"
    seed: int | None = None
    startup_trials: int | None = None  # TPE's random start-up trials (None: Optuna's 10)
    rule: PrunerRule | PromotionRule | None = None  # PromotionRule: asha, paused trials resume (``paused``)
    max_paused_bytes: int | None = None  # asha: paused trials' checkpoints past this are given up (None: no limit)
    parallel: int = 1
    retry_timeout: float = 60.0
    lease: dict[str, Any] | None = field(default=None)  # the driver's lease, renewed by the coordinator
    conditions: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)  # conditional params
    multi_objective: bool = False  # the per-epoch metric goes to a user attr (``hpo.study.ATTR_CURVE``)

    @classmethod
    def from_config(cls, cfg: SweepConfig, *, parallel: int, lease: dict[str, Any] | None) -> CoordinatorSettings:
        space = cfg.space
        return cls(
            storage_url=cfg.storage or "",
            study_name=cfg.study_name,
            metric=cfg.study.metric,
            direction=str(cfg.direction),
            distributions=dict(space.distributions),
            base_config=cfg.base_train.to_dict(),
            fixed_params=dict(space.fixed),
            checkpoint_root=checkpoint_root(cfg),
            sampler=cfg.study.sampler.name,
            seed=cfg.study.sampler.seed,
            startup_trials=cfg.study.startup_trials,
            rule=cfg.pruner.rule(),
            max_paused_bytes=_bytes(cfg.pruner.max_paused_gb),
            parallel=parallel,
            retry_timeout=cfg.storage_options.retry_timeout,
            lease=lease,
            conditions=space.conditions,
            multi_objective=len(cfg.objectives) > 1,
        )


def _bytes(gb: float | None) -> int | None:
    return None if gb is None else int(gb * 1e9)


def checkpoint_root(cfg: SweepConfig) -> str:
    """Where a sweep's trials keep their checkpoints: ``output_dir/<study>`` (a URL stays a URL)."""
    from trials.storage_fs import is_url, join

    if is_url(cfg.output_dir):
        return join(cfg.output_dir, cfg.study_name)
    return str(Path(cfg.output_dir).expanduser().resolve() / cfg.study_name)
