"""docs/CONFIG.md is what ``hpo.config_reference`` generates from the config models: a field added, renamed or
given another default without regenerating it fails here."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest

from hpo.config import SweepConfig
from hpo.config_reference import default_text, render, sections, type_name
from tests.conftest import REPO

REGENERATE = "python -m hpo.config_reference > docs/CONFIG.md"


def test_the_committed_reference_is_what_the_code_generates() -> None:
    committed = (REPO / "docs" / "CONFIG.md").read_text()
    assert committed == render(), f"docs/CONFIG.md is stale: regenerate it with `{REGENERATE}`"


def test_the_module_prints_the_reference() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "hpo.config_reference"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == render()


def test_every_field_of_every_section_is_listed() -> None:
    listed = {row.path for s in sections(SweepConfig) for row in s.rows}
    assert {"study.n_trials", "study.sampler.seed", "pruner.type", "train.dataset.path", "output_dir"} <= listed
    assert set(SweepConfig.model_fields) <= listed
    assert "train.metric" not in listed and "train.early_stopping" not in listed  # the sweep sets them


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (int, "int"),
        (int | None, "int | null"),
        (Literal["a", "b"], "'a' | 'b'"),
        (float | Literal["auto"], "float | 'auto'"),
        (list[str] | None, "list of str | null"),
        (tuple[int | str, ...], "list of int | str"),
        (dict[str, Any], "mapping of str to any"),
    ],
)
def test_type_names(tp: Any, expected: str) -> None:
    assert type_name(tp) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "null"), (True, "true"), ("", "''"), ("runs", "runs"), (1e-3, "0.001"), ([1, 2], "[1, 2]")],
)
def test_default_text(value: Any, expected: str) -> None:
    assert default_text(value) == expected
