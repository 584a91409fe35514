"""The study fingerprint (``hpo.fingerprint``): which config changes make trials incomparable (a table), the one
line a sweep refuses with, a change of hpo's defaults told apart from a change of the config, and the image
folder's file-list digest. Pure, apart from a real folder for the digest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from hpo import fingerprint as fp
from hpo import study as studies
from hpo.config import SweepConfig
from hpo.errors import ConfigError
from trials.config import merge_dotted

VERSION = "0.1.0"
BASE: dict[str, Any] = {
    "study": {"name": "s", "n_trials": 2, "sampler": {"name": "random", "seed": 0}},
    "search_space": {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
    "pruner": "none",
    "train": {
        "model": "resnet18",
        "weights": None,
        "dataset": {"type": "digits", "classes": [0, 1, 2], "max_train_samples": 60, "max_val_samples": 30},
        "image_size": 32,
        "epochs": 1,
    },
}


def _cfg(data: dict[str, Any]) -> SweepConfig:
    return SweepConfig.model_validate(data)


def _record(**changes: Any) -> dict[str, Any]:
    return fp.resolve(_cfg(merge_dotted(BASE, changes)), version=VERSION)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        # what makes trials comparable: drift
        ({"train.dataset.max_train_samples": 40}, ["train.dataset.max_train_samples"]),
        ({"train.dataset.max_val_samples": None}, ["train.dataset.max_val_samples"]),
        ({"train.dataset.classes": [0, 1, 3]}, ["train.dataset.classes"]),
        ({"train.dataset.split_seed": 1}, ["train.dataset.split_seed"]),
        ({"train.dataset.val_split": 0.3}, ["train.dataset.val_split"]),
        ({"train.dataset.test_split": 0}, ["train.dataset.test_split"]),
        ({"train.dataset.on_bad_image": "skip"}, ["train.dataset.on_bad_image"]),
        ({"train.epochs": 2}, ["train.epochs"]),
        ({"train.model": "resnet34"}, ["train.model"]),
        ({"train.weights": "DEFAULT"}, ["train.weights"]),
        ({"train.image_size": 64}, ["train.image_size"]),
        ({"train.optimizer": "sgd"}, ["train.optimizer"]),
        ({"early_stopping.patience": 5}, ["train.early_stopping.patience"]),
        ({"study.metric": "val_loss"}, ["study.objectives"]),
        ({"search_space.lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True}}, ["search_space.lr"]),
        ({"search_space.lr": [1.0e-3, 3.0e-3]}, ["search_space.lr"]),
        ({"search_space.momentum": {"low": 0.8, "high": 0.95}}, ["train.momentum", "search_space.momentum"]),
        ({"search_space.dropout": 0.1}, ["train.dropout", "search_space.dropout"]),  # searched, now fixed
        # how trials are run, or a value written as it resolves anyway: no drift
        ({"study.n_trials": 50}, []),
        ({"study.timeout": 60.0}, []),
        ({"study.sampler": {"name": "tpe", "seed": 3}}, []),
        ({"study.name": "other"}, []),
        ({"parallel": 4}, []),
        ({"storage": "sqlite:///other.db"}, []),
        ({"storage_options.retry_timeout": 5.0}, []),
        ({"retries": 2}, []),
        ({"max_failures": 9}, []),
        ({"tensorboard": True}, []),
        ({"output_dir": "elsewhere"}, []),
        ({"pruner": "median"}, []),
        ({"resources.cpus_per_trial": 2.0}, []),
        ({"train.seed": 7}, []),
        ({"train.device": "cpu", "train.num_workers": 0, "train.amp": False, "train.checkpoint_every_s": 0.0}, []),
        ({"train.dataset.download": True}, []),
        ({"train.image_size": None}, []),  # digits resolve to 32 px
        ({"train.dataset.val_split": 0.2, "train.dataset.test_split": 0.2}, []),  # the defaults, written out
        ({"search_space.lr": {"low": 0.001, "high": 0.003, "log": True}}, []),
    ],
)
def test_what_is_drift(changes: dict[str, Any], fields: list[str]) -> None:
    found = fp.compare(_record(), _record(**changes))
    assert [c.field for c in found] == fields
    assert not any(c.default_moved for c in found)


def test_the_refusal_is_one_line_naming_each_field_old_and_new_and_the_ways_on() -> None:
    changes = fp.compare(_record(), _record(**{"train.dataset.max_train_samples": 40, "train.epochs": 3}))
    line = fp.refusal("s", changes, old_version=VERSION, new_version=VERSION)
    assert "\n" not in line
    assert "train.dataset.max_train_samples 60 -> 40" in line and "train.epochs 1 -> 3" in line
    assert "--study NEW" in line and "--allow-changes" in line
    assert "defaults changed" not in line


def test_a_search_space_entry_added_or_dropped_reads_not_searched() -> None:
    changes = fp.compare(_record(), _record(**{"search_space.momentum": {"low": 0.8, "high": 0.95}}))
    line = fp.refusal("s", changes, old_version=VERSION, new_version=VERSION)
    assert 'search_space.momentum not searched -> {"high": 0.95, "low": 0.8}' in line


def _older_hpo(record: dict[str, Any], key: str, value: Any, version: str = "0.0.9") -> dict[str, Any]:
    """``record`` as an hpo whose default for ``key`` was ``value`` would have written it (the config silent)."""
    old = copy.deepcopy(record)
    old["values"][key] = value
    old["defaults"][key] = value
    old["hpo_version"] = version
    return old


@pytest.mark.parametrize(
    ("key", "old_default"),
    [
        ("train.dataset.val_split", 0.25),
        ("train.warmup_epochs", 1),
        ("search_space.weight_decay", {"low": 1.0e-5, "high": 1.0e-2, "log": True}),
    ],
)
def test_a_default_that_moved_under_an_unchanged_config_is_told_apart(key: str, old_default: Any) -> None:
    new = _record()
    changes = fp.compare(_older_hpo(new, key, old_default), new)
    assert [(c.field, c.default_moved) for c in changes] == [(key, True)]
    line = fp.refusal("s", changes, old_version="0.0.9", new_version=VERSION)
    assert "hpo's defaults changed (pin the old value in the config or use --allow-changes)" in line
    assert key in line and "0.0.9" in line and "\n" not in line


def test_a_pinned_old_default_is_no_drift() -> None:
    """Pinning the value the old default had (the advice of the refusal) makes the fingerprints agree."""
    old = _older_hpo(_record(), "train.dataset.val_split", 0.25)
    assert fp.compare(old, _record(**{"train.dataset.val_split": 0.25})) == []


def test_a_config_change_beside_a_moved_default_is_a_config_change() -> None:
    old = _older_hpo(_record(), "train.warmup_epochs", 1)
    changes = fp.compare(old, _record(**{"train.epochs": 4}))
    assert {(c.field, c.default_moved) for c in changes} == {("train.warmup_epochs", True), ("train.epochs", False)}
    line = fp.refusal("s", changes, old_version="0.0.9", new_version=VERSION)
    assert "train.epochs 1 -> 4" in line and "train.warmup_epochs 1 -> 0 (hpo's default changed)" in line
    assert "--study NEW" in line and "--allow-changes" in line


def test_a_field_one_hpo_version_lacks_counts_only_off_its_default() -> None:
    new = _record()
    old = copy.deepcopy(new)
    del old["values"]["train.label_smoothing"], old["defaults"]["train.label_smoothing"]  # an older hpo's schema
    assert fp.compare(old, new) == []
    changes = fp.compare(old, _record(**{"train.label_smoothing": 0.1}))
    assert [(c.field, c.old, c.new) for c in changes] == [("train.label_smoothing", fp.ABSENT, 0.1)]


def test_an_image_folder_digest_follows_names_and_sizes_not_times(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.png").write_bytes(b"x" * (10 + i))
    (tmp_path / "notes.txt").write_text("not an image")
    first = fp.folder_digest(tmp_path)
    assert first.startswith("4 files, sha256 ")
    (tmp_path / "a" / "0.png").touch()
    (tmp_path / "readme.md").write_text("not an image either")
    assert fp.folder_digest(tmp_path) == first
    (tmp_path / "a" / "0.png").write_bytes(b"y" * 11)
    resized = fp.folder_digest(tmp_path)
    assert resized != first
    (tmp_path / "b" / "2.png").write_bytes(b"z")
    assert fp.folder_digest(tmp_path).startswith("5 files, ")
    assert fp.folder_digest(tmp_path / "missing") == "unreadable"


def test_an_image_folder_config_records_its_files(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "0.png").write_bytes(b"x")
    folder = {"type": "imagefolder", "path": str(tmp_path)}
    data = merge_dotted(BASE, {"train.dataset": folder, "train.image_size": None})
    record = fp.of_config(_cfg(data), VERSION)
    assert record["values"]["train.dataset.files"] == fp.folder_digest(tmp_path)
    assert record["values"]["train.image_size"] == 224  # an image folder's default size
    (tmp_path / "a" / "1.png").write_bytes(b"x")
    assert [c.field for c in fp.compare(record, fp.of_config(_cfg(data), VERSION))] == ["train.dataset.files"]


MO = {"study.metrics": ["val_acc", "params_m"]}


@pytest.mark.parametrize("allow", [False, True])
def test_other_secondary_objectives_are_refused_even_when_changes_are_allowed(allow: bool) -> None:
    """Bug 5: [val_acc, params_m] then [val_acc, latency_ms] would read params_m as latency."""
    attrs = {studies.ATTR_METRIC: "val_acc", studies.ATTR_OBJECTIVES: ["val_acc", "params_m"]}
    new = _record(**{"study.metrics": ["val_acc", "latency_ms"]})
    with pytest.raises(ConfigError, match=r"^study\.metrics: study 's' .*'params_m'.*'latency_ms'") as e:
        studies.check_continue("s", attrs, ["maximize", "minimize"], new, allow_changes=allow)
    assert "\n" not in str(e.value)
    # the same objectives recorded only in the fingerprint (no objectives attr) are checked the same way
    with pytest.raises(ConfigError, match=r"^study\.metrics"):
        studies.check_continue(
            "s", {studies.ATTR_FINGERPRINT: _record(**MO)}, ["maximize", "minimize"], new, allow_changes=allow
        )


def test_check_continue_allows_a_study_without_fingerprint_and_returns_allowed_changes() -> None:
    now = _record(**{"train.epochs": 2})
    assert studies.check_continue("s", {studies.ATTR_METRIC: "val_acc"}, ["maximize"], now) == []
    attrs = {studies.ATTR_FINGERPRINT: _record()}
    with pytest.raises(ConfigError, match=r"train\.epochs 1 -> 2"):
        studies.check_continue("s", attrs, ["maximize"], now)
    allowed = studies.check_continue("s", attrs, ["maximize"], now, allow_changes=True)
    assert [(c.field, c.old, c.new) for c in allowed] == [("train.epochs", 1, 2)]
    entry = fp.change_log_entry(allowed, version=VERSION, when="2026-12-03T09:00:00+00:00")
    assert entry == {
        "time": "2026-12-03T09:00:00+00:00",
        "hpo_version": VERSION,
        "changes": [{"field": "train.epochs", "old": 1, "new": 2}],
    }
