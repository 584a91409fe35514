"""The GPU script's CPU-runnable parts: its arguments, the JSON merge, the P6 part on the CPU (``--cpu-smoke``),
and that it refuses to run without CUDA. The GPU figures themselves come from ``benchmarks/gpu.sh`` on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu
from benchmarks.common import REPO


def test_arguments() -> None:
    args = gpu.parse_args([])
    assert args.parts == list(gpu.PARTS) and not args.cpu_smoke and args.output == REPO / "BENCHMARKS.json"
    assert gpu.parse_args(["--parts", "sweep, p6"]).parts == ["sweep", "p6"]
    assert gpu.parse_args(["--cpu-smoke", "--parts", "sweep"]).parts == ["p6"]  # the smoke test is P6 alone


@pytest.mark.parametrize("argv", [["--parts", "p7"], ["--parts", ","], ["--images", "3"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        gpu.parse_args(argv)
    assert info.value.code == 2 and argv[1].strip(",") in capsys.readouterr().err


def test_merge_replaces_only_the_gpu_entry(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.json"
    before = {"schema": 1, "git_sha": "abc", "benchmarks": {"P1": {"rows": [{"metric": "x"}]}}, "GPU": {"old": 1}}
    path.write_text(json.dumps(before))
    doc = gpu.merge_entry(path, {"device": "NVIDIA H200", "p6": {"fit_img_s": 3100.5, "nan": float("nan")}})
    assert json.loads(path.read_text()) == doc
    assert doc["benchmarks"] == before["benchmarks"] and doc["git_sha"] == "abc" and doc["schema"] == 1
    assert doc["GPU"] == {"device": "NVIDIA H200", "p6": {"fit_img_s": 3100.5, "nan": None}}
    assert not list(tmp_path.glob("*.tmp"))
    fresh = gpu.merge_entry(tmp_path / "new.json", {"device": "d"})  # no document yet
    assert fresh == {"GPU": {"device": "d"}}


def test_overlap_of_two_trials() -> None:
    a, b, c = (
        {"entered_at": 0, "exited_at": 10},
        {"entered_at": 4, "exited_at": 12},
        {"entered_at": 20, "exited_at": 21},
    )
    assert gpu.overlap_s([a, b, c]) == 6 and gpu.overlap_s([a, c]) == 0


def test_p6_part_on_the_cpu() -> None:
    r = gpu.p6_throughput(gpu.CPU_SMOKE_SHAPE, "cpu")
    assert r["fit_img_s"] > 0 and r["bare_img_s"] > 0 and r["passed"] is None and r["amp"] is None
    assert r["comparison"]["repeats"] == gpu.CPU_SMOKE_SHAPE.repeats


def test_cpu_smoke_writes_the_entry(tmp_path: Path) -> None:
    out = tmp_path / "B.json"
    out.write_text(json.dumps({"benchmarks": {"P6": {"title": "kept"}}}))
    assert gpu.main(["--cpu-smoke", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmarks"] == {"P6": {"title": "kept"}}
    entry = doc["GPU"]
    assert entry["device"] == "cpu (smoke)" and entry["p6"]["shape"]["model"] == "resnet18"
    assert set(entry) >= {"git_sha", "dirty", "date", "versions", "passed"} and "sweep" not in entry


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_script_exits_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "B.json"
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--output", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 2 and "CUDA is not available" in r.stderr and not out.exists()
