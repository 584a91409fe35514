"""Where trials run: ``gpus_per_trial: auto`` (one GPU per trial on a cluster with GPUs, none without), a trial
given no GPU sees none, and impossible placements refused before anything is written. Pure decisions by
table; the real CLI on a local Ray with logical GPUs (``RAY_OVERRIDE_RESOURCES``) end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

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
        ("", 16, 1, (16.0, 1.0, 1)),  # auto on one GPU: one trial at a time, not 16 on GPU 0, with the CPUs
        ("", 16, 4, (4.0, 1.0, 4)),  # cpus_per_trial auto: the node's CPUs per GPU
        ("", 10, 4, (2.0, 1.0, 4)),  # 2.5 CPUs per GPU: floor
        ("", 2, 4, (1.0, 1.0, 2)),  # fewer CPUs than GPUs: at least 1
        ("resources: {gpus_per_trial: 0.5}\n", 16, 2, (4.0, 0.5, 4)),  # two trials per GPU share its CPUs
        ("resources: {gpus_per_trial: 2}\n", 16, 4, (8.0, 2.0, 2)),
        ("resources: {gpus_per_trial: 0}\n", 16, 4, (1.0, 0.0, 16)),  # explicitly CPU only: 1 CPU, as before
        ("resources: {cpus_per_trial: 4}\nparallel: 3\n", 16, 0, (4.0, 0.0, 3)),
        ("resources: {cpus_per_trial: 3}\n", 16, 4, (3.0, 1.0, 4)),  # a number is kept
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


@pytest.mark.parametrize(
    ("value", "want"), [("auto", "auto"), ("4", 4), ("0.5", 0.5), ("lots", None), ("0", None), ("true", None)]
)
def test_cpus_per_trial_is_auto_or_a_number(tmp_path: Path, value: str, want: object) -> None:
    (tmp_path / "c.yaml").write_text(TINY + f"resources: {{cpus_per_trial: {value}}}\n")
    if want is not None:
        assert load_sweep_config(tmp_path / "c.yaml").resources.cpus_per_trial == want
        return
    with pytest.raises(ConfigError) as info:
        load_sweep_config(tmp_path / "c.yaml")
    message = str(info.value)
    assert "resources.cpus_per_trial: must be 'auto' or a number of CPUs" in message and "\n" not in message
    assert repr(yaml.safe_load(value)) in message


def test_cpus_per_trial_defaults_to_auto_and_says_what_it_chose(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(TINY)
    cfg = load_sweep_config(tmp_path / "c.yaml")
    assert cfg.resources.cpus_per_trial == "auto"
    line = place(cfg, RayInfo("local", True, 72, 8, None, gpu_node=(64, 8))).describe()
    assert line == "8 trials at once, 8 CPUs and 1 GPU each (cpus_per_trial auto -> 8: 64 CPUs / 8 GPUs)"
    assert place(cfg, _info(4, 0)).describe() == "4 trials at once, 1 CPU each, no GPU"


_LOGICAL = """
import json, sys, ray
ray.init(num_cpus=8, num_gpus=2, include_dashboard=False, _temp_dir=sys.argv[2], log_to_driver=False)
from hpo.cluster.session import ray_session
from hpo.config import load_sweep_config
from hpo.sweep.run import place
with ray_session() as info:
    out = {}
    for name, extra in (("auto", {}), ("cpu", {"resources.gpus_per_trial": 0})):
        p = place(load_sweep_config(sys.argv[1], **extra), info)
        out[name] = [p.cpus, p.gpus, p.parallel, p.describe()]
print(json.dumps(out))
"""


def test_auto_cpus_on_a_ray_with_logical_gpus(tmp_path: Path) -> None:
    """A real Ray with 8 logical CPUs and 2 logical GPUs (this machine has none): auto gives a 1-GPU trial the
    node's 4 CPUs per GPU, and a trial without a GPU 1 CPU."""
    (tmp_path / "c.yaml").write_text(TINY)
    temp = f"/tmp/hpo-cpus-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
    try:
        r = subprocess.run(
            [sys.executable, "-c", _LOGICAL, str(tmp_path / "c.yaml"), temp],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"},
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["auto"][:3] == [4.0, 1.0, 2]
    assert out["auto"][3].endswith("(cpus_per_trial auto -> 4: 8 CPUs / 2 GPUs)")
    assert out["cpu"][:3] == [1.0, 0.0, 8]


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
