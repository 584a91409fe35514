"""Untrusted files: checkpoints load with weights_only=True, YAML with a safe loader, exports atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hpo.config import load_sweep_config, load_train_file
from hpo.errors import ConfigError
from hpo.files import write_atomic
from tests.conftest import run_cli
from trials.errors import ModelError
from trials.models import build_model


class _Payload:
    """Unpickling this runs code: a full (unsafe) torch.load would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model_state": _Payload(marker)}, evil)
    with pytest.raises(ModelError) as info:
        build_model("resnet18", 3, dropout=0.1, weights=str(evil))
    assert "\n" not in str(info.value) and str(evil) in str(info.value)
    assert not marker.exists()
    train = tmp_path / "t.yaml"
    train.write_text(f"train: {{weights: {evil}, epochs: 1, dataset: {{type: digits, max_train_samples: 20}}}}\n")
    r = run_cli("train", str(train), "--output", str(tmp_path / "out"), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "study: !!python/object/apply:os.system ['touch {marker}']\n",
        "train: !!python/name:os.system\n",
        "study: !!binary aGVsbG8=\n",
    ],
)
def test_yaml_tags_that_construct_objects_are_rejected(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError):
        load_sweep_config(path)
    with pytest.raises(ConfigError):
        load_train_file(path)
    assert not marker.exists()


def test_atomic_write_leaves_the_old_file_whole_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "best.yaml"
    write_atomic(target, "version: 1\n")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "version: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["best.yaml"]  # no temporary file left behind
