"""``hpo delete``: remove a study from its storage and, if asked, the checkpoints its trials wrote.

The study is deleted under its sweep lease (``hpo.sweep.lease``), taken the way a sweep takes it: a sweep that
holds the study refuses the delete, and a sweep that starts meanwhile finds the lease taken and refuses itself.
Optuna's ``delete_study`` removes the study's rows (trials, params, values, attrs: the lease with them).

Checkpoints: every trial records its folder (user attr ``hpo.study.ATTR_CHECKPOINT_DIR``,
``<output_dir>/<study>/trial-NNNNN``). With ``checkpoints``, the sweep's folder ``<output_dir>/<study>`` (its
trials' folders and TensorBoard runs) is removed when every recorded folder lies in it; a recorded folder outside
such a folder is removed on its own, and so is each one under an fsspec URL (``trials.storage_fs``: an
``output_dir`` of ``s3://...``); a URL whose backend is not installed here is left alone. Folders are read before
the study is deleted and removed after, so a failed delete leaves both in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo import study as studies
from hpo.errors import StudyBusyError
from hpo.sweep import lease
from storage import opened
from trials import storage_fs


@dataclass(frozen=True)
class Deleted:
    study: str
    trials: int
    removed: list[str] = field(default_factory=list)  # checkpoint folders removed
    missing: list[str] = field(default_factory=list)  # recorded, but not there (already gone, or another machine's)
    skipped: list[str] = field(default_factory=list)  # recorded URLs whose fsspec backend is not installed here


def delete_study(url: str, study_name: str, *, checkpoints: bool = False) -> Deleted:
    """Delete ``study_name`` from the storage at ``url`` (and, with ``checkpoints``, its trials' checkpoint
    folders). ``StudyBusyError`` while a sweep holds it; ``StudyNotFoundError`` for an unknown study."""
    with opened(url, create_schema=False, check_version=False) as storage:
        study = studies.load(storage, study_name)
        study_id = study._study_id
        mine = lease.new_lease()
        held = lease.acquire(url, storage, study_id, mine)
        if held is not None:
            raise StudyBusyError(
                f"study {study_name!r} is being run by an hpo sweep ({lease.describe(held, time.time())}); stop it "
                f"first (hpo stop --study {study_name}) and delete it once it has exited"
            )
        try:
            trials = storage.get_all_trials(study_id, deepcopy=False)
            folders = [str(d) for t in trials if (d := t.user_attrs.get(studies.ATTR_CHECKPOINT_DIR))]
            storage.delete_study(study_id)
        except BaseException:
            lease.release(url, storage, study_id, mine["owner"])
            raise
    if not checkpoints:
        return Deleted(study_name, len(trials))
    removed, missing, skipped = remove_folders(checkpoint_folders(folders, study_name))
    return Deleted(study_name, len(trials), removed, missing, skipped)


def checkpoint_folders(recorded: list[str], study_name: str) -> list[str]:
    """The folders to remove for the trials' recorded checkpoint folders: each sweep folder
    (``<output_dir>/<study>``, the parent of ``trial-NNNNN`` folders, named after the study) once, and any
    recorded folder outside one. Pure: nothing is read from disk."""
    roots: list[str] = []
    alone: list[str] = []
    for folder in dict.fromkeys(recorded):
        path = Path(folder)
        # a URL's trial folders are removed one by one: on an object store a "folder" is only a key prefix
        if not storage_fs.is_url(folder) and path.name.startswith("trial-") and path.parent.name == study_name:
            root = str(path.parent)
            if root not in roots:
                roots.append(root)
        else:
            alone.append(folder)
    return roots + [f for f in alone if storage_fs.is_url(f) or not any(_inside(f, r) for r in roots)]


def _inside(folder: str, root: str) -> bool:
    return Path(folder) == Path(root) or Path(root) in Path(folder).parents


def remove_folders(folders: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Remove each folder (a local path or a URL); (removed, missing, skipped: a URL whose fsspec backend is not
    installed here)."""
    removed, missing, skipped = [], [], []
    for folder in folders:
        if storage_fs.protocol_problem(folder) is not None:
            skipped.append(folder)
        elif storage_fs.remove_folder(folder):
            removed.append(folder)
        else:
            missing.append(folder)
    return removed, missing, skipped


def describe(d: Deleted) -> list[str]:
    """The lines ``hpo delete`` prints."""
    lines = [f"deleted study {d.study!r} ({d.trials} trials)"]
    lines += [f"removed {f}" for f in d.removed]
    lines += [f"not found (already removed, or on another machine): {f}" for f in d.missing]
    lines += [f"left alone (its fsspec backend is not installed here): {f}" for f in d.skipped]
    return lines


def summary(url: str, study_name: str) -> dict[str, Any]:
    """What a delete would remove, for the refusal without ``--yes``: the study's trial count."""
    from hpo.views._readonly import connect
    from hpo.views.queries import state_counts
    from hpo.views.studies import find

    with connect(url) as conn:
        info = find(conn, study_name)
        counts = state_counts(conn, info.study_id)[info.study_id]
    return {"study": info.name, "trials": sum(counts.values()), "counts": counts}
