"""Read-only views of a storage: one study's status, every study's counts."""

from __future__ import annotations

from typing import Any

import optuna

from hpo import study as studies
from hpo.ranking import primary
from hpo.views.status import StudyStatus, summarize
from storage import opened


def study_status(storage_url: str, study_name: str) -> StudyStatus:
    with opened(storage_url) as storage:
        study = studies.load(storage, study_name)
        metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
        return summarize(
            study_name,
            metric,
            studies.primary_direction(study),
            study.get_trials(deepcopy=False),
            objectives=studies.objectives(study),
            front=studies.pareto_front(study),
        )


def list_studies(storage_url: str) -> list[dict[str, Any]]:
    with opened(storage_url) as storage:
        rows = []
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=s.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            direction = studies.primary_direction(study)
            best = studies.select_best(trials, direction)
            rows.append(
                {
                    "study": s.study_name,
                    "direction": direction,
                    "metric": study.user_attrs.get(studies.ATTR_METRIC),
                    "n_trials": len(trials),
                    "counts": studies.state_counts(trials),
                    "best_value": None if best is None else primary(best),
                    "best_trial": None if best is None else best.number,
                }
            )
        return rows
