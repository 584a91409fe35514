"""Export a study's best trial as the training config production consumes (``hpo train best.yaml``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hpo
from hpo import files
from hpo import study as studies
from hpo.config import EXPORT_FORMAT, Provenance, TrainFile
from hpo.errors import HpoError
from hpo.ranking import parse_pick, primary
from storage import opened, strip_password
from trials.config import TrainConfig


@dataclass(frozen=True)
class Exported:
    path: Path
    trial: int
    value: float
    metric: str
    text: str


def export_best(storage_url: str, study_name: str, output: str | Path, *, pick: str | None = None) -> Exported:
    """Write the best COMPLETE trial's full training config, with provenance, to ``output`` (atomically).

    A multi-objective study exports the Pareto-optimal trial with the best primary objective; ``pick``
    (``'latency_ms<=5'``) first keeps the Pareto-optimal trials that meet its constraints."""
    with opened(storage_url) as storage:
        study = studies.load(storage, study_name)
        direction = studies.primary_direction(study)
        metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
        best = _choose(study, direction, pick)
    if best is None:
        raise HpoError(f"study {study_name!r} has no COMPLETE trial yet; nothing to export")
    raw = studies.trial_train_config(best)
    if raw is None:
        raise HpoError(f"trial {best.number} of study {study_name!r} records no training config (not run by hpo?)")
    doc = build_document(
        raw,
        study=study_name,
        trial=best.number,
        value=float(primary(best) or 0.0),
        metric=metric,
        direction=direction,
        storage_url=storage_url,
        gpus_per_trial=trial_gpus(best),
    )
    text = (
        f"# Best config of study {study_name!r} (trial {best.number}, {_shown(study, best)}), exported by hpo.\n"
        f"# Train it for production with: hpo train {Path(output).name} --output runs/prod\n" + files.dumps(doc)
    )
    path = files.write_atomic(output, text)
    return Exported(path, best.number, float(primary(best) or 0.0), metric, text)


def _choose(study: Any, direction: str, pick: str | None) -> Any:
    trials = study.get_trials(deepcopy=False)
    if len(study.directions) == 1:
        if pick:
            raise HpoError(f"--pick: study {study.study_name!r} has one objective; --pick chooses on a Pareto front")
        return studies.select_best(trials, direction)
    front = studies.pareto_front(study)
    if pick:
        names = studies.objectives(study)
        try:
            constraints = parse_pick(pick, names)
        except ValueError as e:
            raise HpoError(str(e)) from None
        front = [t for t in front if all(c.holds(dict(zip(names, t.values, strict=False))) for c in constraints)]
        if not front:
            raise HpoError(f"--pick: no Pareto-optimal trial of study {study.study_name!r} meets {pick!r}")
    return studies.select_best(front, direction)


def _shown(study: Any, trial: Any) -> str:
    names = studies.objectives(study)
    return ", ".join(f"{m}={v:.6g}" for m, v in zip(names, trial.values or [], strict=False))


def trial_gpus(trial: Any) -> float | None:
    """How many GPUs ``trial`` ran with (the GPU ids its worker recorded: a shared GPU counts as one), or None
    when its node was not recorded."""
    node = trial.user_attrs.get(studies.ATTR_NODE)
    gpus = node.get("gpus") if isinstance(node, dict) else None
    return float(len(gpus)) if isinstance(gpus, list) else None


def build_document(
    train: dict[str, Any],
    *,
    study: str,
    trial: int,
    value: float,
    metric: str,
    direction: str,
    storage_url: str,
    gpus_per_trial: float | None = None,
) -> dict[str, Any]:
    """The export document, validated through the same model ``hpo train`` loads it with. The provenance's
    ``gpus_per_trial`` is left out when not known (a file of the same format version as before)."""
    config = TrainConfig.from_dict(train)
    provenance = Provenance(
        study=study,
        trial=trial,
        value=value,
        metric=metric,
        direction=direction,
        storage=strip_password(storage_url),
        hpo_version=hpo.__version__,
        exported_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        gpus_per_trial=gpus_per_trial,
    )
    doc = TrainFile(version=EXPORT_FORMAT, train=config, provenance=provenance)
    return {"version": doc.version, "provenance": provenance.model_dump(exclude_none=True), "train": config.to_dict()}
