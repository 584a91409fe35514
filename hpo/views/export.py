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
from storage import opened, strip_password
from trials.config import TrainConfig


@dataclass(frozen=True)
class Exported:
    path: Path
    trial: int
    value: float
    metric: str
    text: str


def export_best(storage_url: str, study_name: str, output: str | Path) -> Exported:
    """Write the best COMPLETE trial's full training config, with provenance, to ``output`` (atomically)."""
    with opened(storage_url) as storage:
        study = studies.load(storage, study_name)
        direction = study.direction.name.lower()
        metric = str(study.user_attrs.get(studies.ATTR_METRIC, "value"))
        best = studies.select_best(study.get_trials(deepcopy=False), direction)
    if best is None:
        raise HpoError(f"study {study_name!r} has no COMPLETE trial yet; nothing to export")
    raw = studies.trial_train_config(best)
    if raw is None:
        raise HpoError(f"trial {best.number} of study {study_name!r} records no training config (not run by hpo?)")
    doc = build_document(
        raw,
        study=study_name,
        trial=best.number,
        value=float(best.value or 0.0),
        metric=metric,
        direction=direction,
        storage_url=storage_url,
    )
    text = (
        f"# Best config of study {study_name!r} (trial {best.number}, {metric}={best.value:.6g}), exported by hpo.\n"
        f"# Train it for production with: hpo train {Path(output).name} --output runs/prod\n" + files.dumps(doc)
    )
    path = files.write_atomic(output, text)
    return Exported(path, best.number, float(best.value or 0.0), metric, text)


def build_document(
    train: dict[str, Any], *, study: str, trial: int, value: float, metric: str, direction: str, storage_url: str
) -> dict[str, Any]:
    """The export document, validated through the same model ``hpo train`` loads it with."""
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
    )
    doc = TrainFile(version=EXPORT_FORMAT, train=config, provenance=provenance)
    return {"version": doc.version, "provenance": provenance.model_dump(), "train": config.to_dict()}
