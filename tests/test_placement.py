"""Where trials run: ``gpus_per_trial: auto`` (one GPU per trial on a cluster with GPUs, none without), a trial
given no GPU sees none, and impossible placements refused before anything is written. Pure decisions by
table; the real CLI on a local Ray with logical GPUs (``RAY_OVERRIDE_RESOURCES``) end to end."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import optuna
import pytest

from hpo.cluster.session import RayInfo
from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from hpo.sweep.run import place
from tests.conftest import run_cli
from tests.fixtures_files import tiny_sweep

TINY = tiny_sweep("placed")


def _info(cpus: float, gpus: float) -> RayInfo:
    return RayInfo("local", True, cpus, gpus, None)


@pytest.mark.parametrize(
    ("extra", "cpus", "gpus", "want"),
    [
        ("", 2, 0, (1.0, 0.0, 2)),  # auto on a CPU machine: no GPU, parallel by CPUs
        ("", 16, 1, (1.0, 1.0, 1)),  # auto on one GPU: one trial at a time, not 16 on GPU 0
        ("", 16, 4, (1.0, 1.0, 4)),
        ("resources: {gpus_per_trial: 0.5}\n", 16, 2, (1.0, 0.5, 4)),  # two trials per GPU
        ("resources: {gpus_per_trial: 0}\n", 16, 4, (1.0, 0.0, 16)),  # explicitly CPU only
        ("resources: {cpus_per_trial: 4}\nparallel: 3\n", 16, 0, (4.0, 0.0, 3)),
    ],
)
def test_placement(tmp_path: Path, extra: str, cpus: float, gpus: float, want: tuple[float, float, int]) -> None:
    (tmp_path / "c.yaml").write_text(TINY + extra)
    p = place(load_sweep_config(tmp_path / "c.yaml"), _info(cpus, gpus))
    assert (p.cpus, p.gpus, p.parallel) == want


@pytest.mark.parametrize(
    ("extra", "cpus", "gpus", "field"),
    [
        ("resources: {gpus_per_trial: 1}\n", 2, 0, "resources.gpus_per_trial"),
        ("resources: {cpus_per_trial: 8}\n", 2, 0, "resources.cpus_per_trial"),
        ("  device: cuda\n", 2, 0, "train.device"),
        ("  device: cuda\nresources: {gpus_per_trial: 0}\n", 2, 2, "train.device"),
    ],
)
def test_impossible_placements_name_the_field(tmp_path: Path, extra: str, cpus: float, gpus: float, field: str) -> None:
    (tmp_path / "c.yaml").write_text(TINY + extra)
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        place(load_sweep_config(tmp_path / "c.yaml"), _info(cpus, gpus))


def test_gpus_per_trial_accepts_auto_and_numbers_only(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(TINY + "resources: {gpus_per_trial: lots}\n")
    with pytest.raises(ConfigError, match=r"resources\.gpus_per_trial"):
        load_sweep_config(tmp_path / "c.yaml")


def _sweep(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    cfg = tmp_path / "placed.yaml"
    cfg.write_text(TINY + extra + f"output_dir: {tmp_path / 'runs'}\n")
    url = f"sqlite:///{tmp_path}/p.db"
    env = {"HPO_RAY_TMPDIR": f"/tmp/hpo-gpu-{uuid.uuid4().hex[:8]}", **(env or {})}
    r = run_cli("sweep", str(cfg), "--storage", url, "--no-progress", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    nodes = [t.user_attrs["node"] for t in optuna.load_study(study_name="placed", storage=url).trials]
    return r.stdout, nodes


@pytest.mark.slow
def test_on_a_machine_without_gpus_a_trial_sees_none(tmp_path: Path) -> None:
    out, nodes = _sweep(tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"})  # what a GPU host's shell may export
    assert "2 trials at once, 1 CPU each, no GPU" in out
    assert all(n["gpus"] == [] and n["cuda_visible_devices"] == "" for n in nodes), nodes


@pytest.mark.slow
def test_auto_gives_each_trial_a_gpu_of_its_own(tmp_path: Path) -> None:
    """Ray's logical GPUs on this CPU machine: the placement Ray makes is the one a GPU machine gets."""
    out, nodes = _sweep(tmp_path, env={"RAY_OVERRIDE_RESOURCES": json.dumps({"GPU": 2})})
    assert "2 trials at once, 1 CPU and 1 GPU each" in out
    assert all(len(n["gpus"]) == 1 and n["cuda_visible_devices"] == n["gpus"][0] for n in nodes), nodes
