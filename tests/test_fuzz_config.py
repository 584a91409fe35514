"""Fuzzed configs: every input is either accepted or one ConfigError line (exit 2 from the CLI), never a
traceback, and a rejected config writes no study."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from storage import StorageError
from tests.conftest import run_cli
from trials.config import merge_dotted

BASE: dict[str, Any] = {
    "study": {"n_trials": 3, "sampler": {"name": "random", "seed": 0}},
    "search_space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [16, 32]},
    "pruner": {"n_startup_trials": 2},
    "early_stopping": {"patience": 2},
    "train": {"epochs": 2, "dataset": {"type": "digits", "classes": [5, 6, 7]}},
}

PATHS = [
    "study",
    "study.name",
    "study.n_trials",
    "study.timeout",
    "study.metric",
    "study.direction",
    "study.sampler",
    "study.sampler.seed",
    "storage",
    "storage_options.retry_timeout",
    "search_space",
    "search_space.lr",
    "search_space.lr.low",
    "search_space.lr.high",
    "search_space.lr.log",
    "search_space.lr.step",
    "search_space.batch_size",
    "search_space.dropout",
    "search_space.optimizer",
    "search_space.epochs",
    "search_space.early_stopping.patience",
    "pruner",
    "pruner.type",
    "pruner.n_warmup_steps",
    "pruner.interval_steps",
    "early_stopping",
    "early_stopping.patience",
    "early_stopping.min_delta",
    "resources.cpus_per_trial",
    "resources.gpus_per_trial",
    "parallel",
    "max_failures",
    "retries",
    "drain_timeout",
    "output_dir",
    "train",
    "train.model",
    "train.weights",
    "train.epochs",
    "train.image_size",
    "train.optimizer",
    "train.momentum",
    "train.seed",
    "train.dataset",
    "train.dataset.type",
    "train.dataset.val_split",
    "train.dataset.test_split",
    "train.dataset.split_seed",
    "train.dataset.classes",
    "train.dataset.max_train_samples",
    "train.label_smoothing",
    "train.amp",
    "train.checkpoint_every_s",
    "unknown_key",
    "train.unknown",
    "study.ünïcödé",
    "search_space.not_a_field",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["1e-3", "tpe", "median", "none", "adamw", "digits", "imagefolder", "val_loss", "-1", ""]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
mutations = st.dictionaries(st.sampled_from(PATHS), values, min_size=1, max_size=4)


def _document(changes: dict[str, Any]) -> str:
    data = BASE
    for key, value in changes.items():  # one at a time: a scalar may replace a mapping another key reaches into
        try:
            data = merge_dotted(data, {key: value})
        except (AttributeError, TypeError):
            data = {**data, key.split(".")[0]: value}
    return yaml.safe_dump(data, allow_unicode=True)


def _check_library(text: str, tmp: Path) -> bool:
    path = tmp / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_sweep_config(path, storage=f"sqlite:///{tmp / 'never.db'}")
    except (ConfigError, StorageError) as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 2000
        return False
    # accepted: the pieces a sweep uses must build
    cfg.base_train.to_dict()
    assert cfg.space.distributions is not None
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
def test_library_accepts_or_rejects_in_one_line(changes: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        _check_library(_document(changes), Path(d))
        assert not (Path(d) / "never.db").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        _check_library(text, Path(d))


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(mutations)
def test_cli_accepts_or_rejects_in_one_line_and_writes_nothing(changes: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "fuzz.yaml").write_text(_document(changes), encoding="utf-8")
        db = f"sqlite:///{tmp / 'study.db'}"
        r = run_cli("validate", "fuzz.yaml", "--no-data", "--storage", db, cwd=tmp, timeout=120)
        assert r.returncode in (0, 2), r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        if r.returncode == 2:
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
            s = run_cli("sweep", "fuzz.yaml", "--storage", db, "--no-progress", cwd=tmp, timeout=120)
            assert s.returncode == 2 and "Traceback" not in s.stderr, s.stdout + s.stderr
        assert not (tmp / "study.db").exists() and not (tmp / "hpo.db").exists()


def test_non_finite_numbers_are_named() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        for text, field in [
            ("search_space:\n  lr: {low: .nan, high: 0.1}\n", "search_space.lr.low"),
            ("train: {momentum: .inf}\n", "train.momentum"),
            ("study: {timeout: .nan}\n", "study.timeout"),
        ]:
            path.write_text(text)
            with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
                load_sweep_config(path)
    assert math.isnan(float("nan"))
