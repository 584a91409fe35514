"""The generators of the README's quoted figures run and write what the README quotes, naming their commit:
``benchmarks.quickstart_seeds`` (docs/quickstart_seeds.json) and ``benchmarks.verify_transcript``
(docs/verify_transcript.txt). Each writes to a temporary file here; the committed ones come from full runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import REPO

pytestmark = pytest.mark.slow


def _run(module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_quickstart_seeds_writes_one_run_per_seed_with_its_commit(tmp_path: Path) -> None:
    out = tmp_path / "seeds.json"
    r = _run("benchmarks.quickstart_seeds", "--seeds", "0", "--max-seconds", "100000", "--output", str(out))
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: the goal missed, still a result
    doc = json.loads(out.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", doc["commit"]) and doc["generated_by"].startswith("python -m")
    (run,) = doc["runs"]
    assert run["seed"] == 0 and run["complete"] + run["pruned"] == 20 and 0 <= run["best_trial"] < 20
    assert len(run["values"]) == 20 and run["seconds"] > 0


def test_verify_transcript_prints_the_verdict_and_names_its_commit(tmp_path: Path) -> None:
    out = tmp_path / "transcript.txt"
    r = _run("benchmarks.verify_transcript", "--output", str(out))
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: not reproduced, a verdict all the same
    text = out.read_text()
    assert re.search(r"^# commit [0-9a-f]{40}", text, re.M)
    assert "trial " in text and "of study small_val10: tuned vs baseline" in text
    assert re.search(r"^reproduced: (yes|NO)", text, re.M)
    assert "gain on the test split" in text
    assert text.rstrip().endswith(f"(exit code {r.returncode})")
