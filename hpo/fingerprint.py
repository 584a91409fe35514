"""What makes a study's trials comparable, recorded on the study so that a changed config is noticed.

A sweep that continues a study after its config changed (other data, other epochs, another model, another
search space) would mix trials that cannot be compared. So each sweep records a *fingerprint* on the study
(``hpo:fingerprint``): the **resolved** values (defaults filled in) of what decides a trial's result, and the
default each of them had. The next sweep compares, and refuses on a difference unless told
``--allow-changes`` (then each change is appended to ``hpo:changes``).

In the fingerprint: the objectives; the data (dataset type, path, name, classes, sample limits, split
fractions and seed, bad-image policy, and for an image folder a digest of its file list: names and sizes);
the model, weights, image size, epochs and every other training setting that is not searched; and the
search space (each searched name with its range or choices and condition). Not in it: how trials are run
(``n_trials``, ``parallel``, ``storage``, ``retries``, ``max_failures``, ``study.timeout``, the sampler, the
pruner, ``resources``, ``output_dir``, ``tensorboard``, ``train.device``, ``num_workers``, ``amp``,
``checkpoint_every_s``) and the training seed ``train.seed`` (another seed is another draw of a comparable
trial).

``resolve`` and ``compare`` are pure; ``folder_digest`` is the one piece of I/O (a directory listing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.space import DEFAULT_SPACE, parse_param
from trials.config import DatasetConfig, EarlyStoppingConfig, TrainConfig, merge_dotted, searchable_fields

if TYPE_CHECKING:
    from hpo.config import SweepConfig

FORMAT = 1
#: How trials are run, not what they compute: changing these keeps trials comparable.
NOT_COMPARED = frozenset({"device", "num_workers", "amp", "checkpoint_every_s", "seed", "metric", "dataset.download"})
#: Stand-in for a key one fingerprint has and the other lacks.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
#: What a searched training field's ``train.<name>`` holds (the search space entry says the rest).
SEARCHED = "searched"
_SHOWN = 6  # changed fields named in one message
_VALUE_WIDTH = 60


@dataclass(frozen=True)
class Change:
    """One compared value that differs: ``old`` and ``new`` are ``ABSENT`` where a side lacks it."""

    field: str
    old: Any
    new: Any
    #: both values were hpo's default of their time, and the defaults differ: hpo changed, the config did not
    default_moved: bool = False


def resolve(cfg: SweepConfig, *, version: str, files: str | None = None) -> dict[str, Any]:
    """The fingerprint of ``cfg``: ``{"format", "hpo_version", "values", "defaults"}``, JSON-safe. ``values`` maps
    a config path (``train.dataset.max_train_samples``, ``search_space.lr``, ``study.objectives``) to its
    resolved value, ``defaults`` the same paths to what hpo would use if the config did not say. ``files``:
    ``folder_digest`` of an image folder (``train.dataset.files``)."""
    space = cfg.space
    searched = {p.name for p in space.params if not p.is_fixed}
    spec = space.to_spec()
    train = merge_dotted(cfg.base_train.to_dict(), space.fixed)
    values: dict[str, Any] = {"study.objectives": list(cfg.objectives)}
    defaults: dict[str, Any] = {"study.objectives": ["val_acc"]}
    for name, value in _train_fields(train).items():
        values[f"train.{name}"] = SEARCHED if name in searched else value
        defaults[f"train.{name}"] = _train_default(name, train, cfg.objectives)
    if files is not None:
        values["train.dataset.files"] = files
        defaults["train.dataset.files"] = None
    for name in sorted(searched):
        values[f"search_space.{name}"] = spec[name]
        defaults[f"search_space.{name}"] = _space_default(name)
    record = {"format": FORMAT, "hpo_version": version, "values": values, "defaults": defaults}
    return dict(json.loads(json.dumps(record)))  # as it reads back from the study (tuples are lists)


def _train_fields(train: Mapping[str, Any]) -> dict[str, Any]:
    """The compared training fields, dotted (``dataset.classes``), with split fractions resolved."""
    flat: dict[str, Any] = {}
    for key, value in train.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    out = {k: v for k, v in flat.items() if k not in NOT_COMPARED}
    out["image_size"] = _image_size(train.get("image_size"), flat.get("dataset.type", "digits"))
    for name, fraction in _split_defaults().items():
        if out.get(f"dataset.{name}") is None:
            out[f"dataset.{name}"] = fraction
    return out


def _image_size(size: int | None, dataset_type: str) -> int:
    """``TrainConfig.resolved_image_size`` for ``size`` and a dataset of ``dataset_type``."""
    data = DatasetConfig(type=dataset_type, path=".", name="-")  # type: ignore[arg-type]
    return TrainConfig(dataset=data, image_size=size).resolved_image_size


def _split_defaults() -> dict[str, float]:
    from trials.data import DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT  # imports torch: only where data is touched

    return {"val_split": DEFAULT_VAL_SPLIT, "test_split": DEFAULT_TEST_SPLIT}


def _declared_defaults() -> dict[str, Any]:
    out = {f.name: _default_of(f) for f in dataclasses.fields(TrainConfig)}
    out.update({f"dataset.{f.name}": _default_of(f) for f in dataclasses.fields(DatasetConfig)})
    out.update({f"early_stopping.{f.name}": _default_of(f) for f in dataclasses.fields(EarlyStoppingConfig)})
    return out


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return dataclasses.MISSING


def _train_default(name: str, train: Mapping[str, Any], objectives: Sequence[str]) -> Any:
    """What ``train.<name>`` would resolve to if the config left it out (the rest of ``train`` as it is)."""
    if name in DEFAULT_SPACE:
        return SEARCHED
    if name == "image_size":
        return _image_size(None, train.get("dataset", {}).get("type", "digits"))
    if name == "latency_batch":
        from hpo.config import StudyConfig

        return StudyConfig.model_fields["latency_batch"].default if "latency_ms" in objectives else 0
    if name.startswith("dataset.") and name.removeprefix("dataset.") in _split_defaults():
        return _split_defaults()[name.removeprefix("dataset.")]
    value = _declared_defaults().get(name, dataclasses.MISSING)
    return None if value is dataclasses.MISSING else value


def _space_default(name: str) -> Any:
    """The spec ``search_space.<name>`` has when the config does not name it: the default space's, or none."""
    if name not in DEFAULT_SPACE:
        return None
    param = parse_param(name, DEFAULT_SPACE[name], searchable_fields()[name])
    from hpo.space import SearchSpace

    return dict(json.loads(json.dumps(SearchSpace((param,)).to_spec()[name])))


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """What differs between a study's recorded fingerprint ``old`` and the config's ``new``, in ``new``'s order.

    A key only one side has is a change for the search space (a name searched or no longer searched); for the
    rest it is a field one hpo version knows and the other does not, and it counts only when its value is not
    that side's default."""
    ov, nv = dict(old.get("values") or {}), dict(new.get("values") or {})
    od, nd = dict(old.get("defaults") or {}), dict(new.get("defaults") or {})
    changes = []
    for key in [*nv, *(k for k in ov if k not in nv)]:
        a, b = ov.get(key, ABSENT), nv.get(key, ABSENT)
        if a is not ABSENT and b is not ABSENT:
            if a == b:
                continue
            moved = key in od and key in nd and a == od[key] and b == nd[key] and od[key] != nd[key]
            changes.append(Change(key, a, b, moved))
        elif _one_sided_counts(key, a, b, od, nd):
            changes.append(Change(key, a, b))
    return changes


def _one_sided_counts(key: str, a: Any, b: Any, od: Mapping[str, Any], nd: Mapping[str, Any]) -> bool:
    if key.startswith("search_space."):  # absent: not searched
        return True
    if a is ABSENT:  # a field this hpo knows and the old one did not: a change only if not at its default
        return bool(b != nd.get(key, ABSENT))
    return bool(a != od.get(key, ABSENT))


def refusal(study: str, changes: Sequence[Change], *, old_version: str | None, new_version: str) -> str:
    """The one line a sweep refuses with: the changed fields, old and new, and the ways on."""
    listed = "; ".join(_describe(c) for c in changes[:_SHOWN])
    if len(changes) > _SHOWN:
        listed += f"; and {len(changes) - _SHOWN} more"
    versions = f"hpo {old_version or 'unknown'} then, {new_version} now"
    if all(c.default_moved for c in changes):
        return (
            f"study {study!r}: hpo's defaults changed (pin the old value in the config or use --allow-changes): "
            f"{listed} ({versions}); or run a new study with --study NEW"
        )
    return (
        f"study {study!r} was run with another config: {listed}; its trials would not be comparable with new ones: "
        f"run a new study with --study NEW, or continue this one on purpose with --allow-changes (recorded on it)"
    )


def _describe(c: Change) -> str:
    text = f"{c.field} {_show(c.field, c.old)} -> {_show(c.field, c.new)}"
    return text + " (hpo's default changed)" if c.default_moved else text


def _show(field: str, value: Any) -> str:
    if value is ABSENT:
        return "not searched" if field.startswith("search_space.") else "unset"
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def change_log_entry(changes: Sequence[Change], *, version: str, when: str) -> dict[str, Any]:
    """What ``--allow-changes`` appends to the study's ``hpo:changes``: when, which hpo, each field old and new."""
    return {
        "time": when,
        "hpo_version": version,
        "changes": [
            {"field": c.field, "old": None if c.old is ABSENT else c.old, "new": None if c.new is ABSENT else c.new}
            for c in changes
        ],
    }


def folder_digest(path: str | Path) -> str:
    """An image folder's file list (relative names and sizes, not contents): ``"<n> files, sha256 <12 hex>"``.
    Cheap: one listing and one ``stat`` per image. A folder that cannot be listed: ``"unreadable"``."""
    from trials.data import imagefolder_images
    from trials.errors import DataError

    root = Path(path).expanduser()
    try:
        images = imagefolder_images(root)
        lines = sorted(f"{os.path.relpath(p, root)}\t{os.path.getsize(p)}" for p in images)
    except (DataError, OSError):
        return "unreadable"
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return f"{len(lines)} files, sha256 {digest[:12]}"


def of_config(cfg: SweepConfig, version: str) -> dict[str, Any]:
    """``resolve(cfg)`` with the image folder's ``folder_digest`` (the listing is the only I/O)."""
    data = cfg.train.dataset
    files = folder_digest(data.path) if data.type == "imagefolder" and data.path else None
    return resolve(cfg, version=version, files=files)
