"""Benchmark results as data: BENCHMARKS.json (provenance, merging), BENCHMARKS.md rendered from it alone,
and the statistics behind every timing row (interleaved repeats, the median ratio and its bootstrap CI)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as suite
from benchmarks import report, results
from benchmarks.common import REPO, Comparison, Result, Row, bootstrap_ci, interleaved


def test_committed_markdown_is_rendered_from_the_committed_json() -> None:
    json_path, md_path = REPO / "BENCHMARKS.json", REPO / "BENCHMARKS.md"
    if not json_path.exists():
        pytest.skip("BENCHMARKS.json is not committed yet: the lead writes it with a full `make bench` run")
    doc = results.load(json_path)
    assert doc is not None
    assert report.markdown(doc) == md_path.read_text(), "BENCHMARKS.md was edited by hand or not re-rendered"


# ---------------------------------------------------------------------------------------------------
# Statistics


def test_interleaved_alternates_which_side_runs_first() -> None:
    calls: list[str] = []

    def side(name: str, value: float) -> Any:
        def fn() -> float:
            calls.append(name)
            return value + len(calls)

        return fn

    c = interleaved(side("h", 0), side("b", 100), repeats=4)
    assert calls == ["h", "b", "b", "h", "h", "b", "b", "h"]
    assert c.repeats == 4
    # what each call returned, paired by repeat: hpo's call numbers 1, 4, 5, 8; the baseline's 2, 3, 6, 7
    assert c.hpo == [1, 4, 5, 8] and c.baseline == [102, 103, 106, 107]

    calls.clear()
    c = interleaved(side("h", 0), side("b", 0), repeats=1, warmup=True)
    assert calls == ["h", "b", "h", "b"] and c.hpo == [3] and c.baseline == [4]  # the warm-up is not recorded


def test_comparison_median_of_paired_ratios_and_its_ci() -> None:
    c = Comparison(hpo=[1.0, 2.0, 3.0, 4.0, 50.0], baseline=[2.0, 4.0, 6.0, 8.0, 10.0])
    assert c.ratios == [0.5, 0.5, 0.5, 0.5, 5.0]
    assert c.ratio == 0.5  # the median: one outlier pair does not move it
    lo, hi = c.ci95
    assert lo <= c.ratio <= hi
    d = c.as_dict()
    assert d["repeats"] == 5 and d["ratio_median"] == 0.5 and d["ratio_ci95"] == [lo, hi]
    assert d["hpo"] == c.hpo and d["baseline"] == c.baseline
    assert c.fmt_ratio() == f"0.50x [{lo:.2f}, {hi:.2f}] (n=5)"


@pytest.mark.parametrize("seed", range(5))
def test_bootstrap_ci_contains_the_median_and_narrows_with_more_samples(seed: int) -> None:
    import random
    import statistics

    rng = random.Random(seed)
    few = [rng.gauss(1.0, 0.2) for _ in range(5)]
    many = few + [rng.gauss(1.0, 0.2) for _ in range(195)]
    for xs in (few, many):
        lo, hi = bootstrap_ci(xs)
        assert lo <= statistics.median(xs) <= hi
        assert min(xs) <= lo and hi <= max(xs)
    assert bootstrap_ci(many)[1] - bootstrap_ci(many)[0] < bootstrap_ci(few)[1] - bootstrap_ci(few)[0]
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded: a re-render agrees


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, math.nan, 1.0]) == (1.0, 1.0)  # NaN samples are left out


# ---------------------------------------------------------------------------------------------------
# The document and the renderer


def _result(key: str, *, ratio_fail: bool = False) -> Result:
    r = Result(key, f"benchmark {key}")
    comparison = Comparison(hpo=[1.0, 1.1, 0.9, 1.0, 1.0], baseline=[2.0, 2.0, 2.0, 2.0, 2.0])
    # the ratio text as a benchmark might write it; the table shows the comparison's median, CI and n instead
    r.rows.append(Row("seconds per trial", "hpo <= 1.0x", "1.00 s", "2.00 s", "0.5x", True, comparison))
    r.rows.append(Row("peak | connections", "<= 4", "3", "9", "0.33x", not ratio_fail))
    r.rows.append(Row("for information", "", "x", "", "", None))
    r.settings = {"n_trials": 100, "parallel": 2}
    r.baselines = {"ray_tune": {"reuse_actors": True, "max_concurrent_trials": 2, "scheduler": None}}
    r.notes = ["a note"]
    r.raw = {"summary": {100: {"p95": math.nan}}, "pairs": (1, 2)}
    r.seconds = 12.3
    return r


def _git_repo(path: Path) -> Path:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    return path


def _doc(
    results_: list[Result],
    repo: Path,
    previous: dict[str, Any] | None = None,
    started: tuple[str, bool] | None = None,
) -> dict[str, Any]:
    return results.document(
        results_,
        quick=False,
        command="python -m benchmarks",
        admin_url="postgresql+psycopg2://nobody@127.0.0.1:1/none",  # the version is informational: "unknown"
        dates={r.key: "2026-11-30T10:00:00+00:00" for r in results_},
        previous=previous,
        repo=repo,
        started=started,
    )


def test_git_state_any_change_is_dirty(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert results.git_state(repo) == (head, False)
    (repo / "a.txt").write_text("changed\n")
    assert results.git_state(repo) == (head, True)
    (repo / "a.txt").write_text("a\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "new.txt").write_text("untracked\n")
    assert results.git_state(repo) == (head, True)
    assert results.git_state(tmp_path / "nowhere") == ("unknown", True)


def test_the_suites_own_outputs_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "BENCHMARKS.json").write_text("{}\n")
    (repo / "BENCHMARKS.md").write_text("# Benchmarks\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "p5_anytime.png").write_bytes(b"png")
    assert results.git_state(repo) == (head, False)
    (repo / "docs" / "other.png").write_bytes(b"png")
    assert results.git_state(repo) == (head, True)


def test_a_tree_that_changes_while_the_benchmarks_run_makes_the_run_dirty(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path)
    started = results.git_state(repo)
    assert _doc([_result("P1")], repo, started=started)["dirty"] is False
    (repo / "a.txt").write_text("edited mid-run\n")
    doc = _doc([_result("P1")], repo, started=started)
    assert doc["dirty"] is True and doc["benchmarks"]["P1"]["dirty"] is True
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "moved"], cwd=repo, check=True)
    doc = _doc([_result("P1")], repo, started=started)  # clean again, but HEAD is not the commit that ran
    assert doc["git_sha"] == started[0] and doc["dirty"] is True


def test_document_fields_and_json_round_trip(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path)
    doc = _doc([_result("P2")], repo)
    assert {"git_sha", "dirty", "date", "machine", "versions", "command", "benchmarks"} <= set(doc)
    assert set(doc["machine"]) == {"cpu", "cores", "os"}
    assert set(doc["versions"]) == {"python", "optuna", "ray", "torch", "sqlalchemy", "postgresql"}
    assert doc["versions"]["postgresql"] == "unknown" and doc["dirty"] is False
    entry = doc["benchmarks"]["P2"]
    assert entry["git_sha"] == doc["git_sha"] and entry["quick"] is False and entry["seconds"] == 12.3
    assert entry["baselines"] == {"ray_tune": {"reuse_actors": True, "max_concurrent_trials": 2, "scheduler": None}}
    timing, goal, info = entry["rows"]
    assert timing["verdict"] == "PASS" and goal["verdict"] == "PASS" and info["verdict"] is None
    assert timing["comparison"]["repeats"] == 5 and timing["comparison"]["ratio_median"] == 0.5
    assert "comparison" not in goal
    assert entry["raw"] == {"summary": {"100": {"p95": None}}, "pairs": [1, 2]}  # JSON: str keys, no NaN

    path = tmp_path / "B.json"
    results.write(doc, path)
    assert results.load(path) == doc
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert results.load(tmp_path / "missing.json") is None


def test_a_partial_run_merges_and_keeps_the_others_provenance(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path)
    first = _doc([_result("P1"), _result("P5")], repo)
    old_sha = first["git_sha"]
    (repo / "a.txt").write_text("two\n")
    subprocess.run(["git", "commit", "-qam", "two"], cwd=repo, check=True)
    (repo / "a.txt").write_text("dirty\n")
    second = _doc([_result("P5", ratio_fail=True)], repo, previous=first)
    assert second["git_sha"] != old_sha and second["dirty"] is True
    assert list(second["benchmarks"]) == ["P1", "P5"]
    assert second["benchmarks"]["P1"] == first["benchmarks"]["P1"]
    assert second["benchmarks"]["P5"]["git_sha"] == second["git_sha"] and second["benchmarks"]["P5"]["dirty"]
    assert second["benchmarks"]["P5"]["passed"] is False

    md = report.markdown(second)
    assert f"- Commit `{old_sha[:10]}`, 2026-11-30 10:00 UTC, full run" in md
    assert f"- Commit `{second['git_sha'][:10]}` with uncommitted changes (dirty)" in md
    assert "the benchmarks come from different commits" in md
    assert "- Benchmarks meeting every goal: 1/2" in md
    assert "- Goal missed: peak | connections (3, goal <= 4)" in md


def test_markdown_shows_ci_baseline_settings_notes_and_is_pure(tmp_path: Path) -> None:
    doc = _doc([_result("P3"), _result("P1")], _git_repo(tmp_path))
    md = report.markdown(doc)
    assert md == report.markdown(json.loads(json.dumps(doc)))  # a function of the document alone
    lines = md.splitlines()
    assert lines[0] == "# Benchmarks"
    table = [line for line in lines if line.startswith("| P")]
    assert [line.split(" | ")[0] for line in table] == ["| P1"] * 3 + ["| P3"] * 3  # in benchmark order
    c = Comparison(hpo=[1.0, 1.1, 0.9, 1.0, 1.0], baseline=[2.0] * 5)
    assert table[0] == f"| P1 | seconds per trial | hpo <= 1.0x | 1.00 s | 2.00 s | {c.fmt_ratio()} | **PASS** |"
    assert "(n=5)" in table[0] and "[0.45, 0.55]" in table[0]
    assert table[1] == "| P1 | peak \\| connections | <= 4 | 3 | 9 | 0.33x | **PASS** |"
    assert table[2].endswith("| x |  |  |  |")
    assert "  - ray_tune: `reuse_actors: true`, `max_concurrent_trials: 2`, `scheduler: null`" in lines
    assert "- hpo's settings: `n_trials: 100`, `parallel: 2`" in lines
    assert "- a note" in lines and "## P1: benchmark P1" in lines and "Goal missed" not in md


def test_exit_code_gates_full_runs_and_checked_quick_runs() -> None:
    ok, missed = _result("P1"), _result("P2", ratio_fail=True)
    assert suite.exit_code([ok], quick=False, check=False) == 0
    assert suite.exit_code([ok, missed], quick=False, check=False) == 1
    assert suite.exit_code([ok, missed], quick=True, check=False) == 0
    assert suite.exit_code([ok, missed], quick=True, check=True) == 1
    broken = suite.crashed("P8", ModuleNotFoundError("No module named 'benchmarks.p8_useful_work'"))
    assert broken.title == "useful-work fraction of a real sweep (crashed)" and not broken.passed
    assert suite.exit_code([ok, broken], quick=False, check=False) == 1


def test_suite_registry() -> None:
    assert sorted(suite.RUN_ORDER) == sorted(suite.ALL)
    assert suite.RUN_ORDER[0] == "P6" and suite.RUN_ORDER[-1] == "P5"
    assert "P8" in suite.NEEDS_RAY and "P9" not in suite.NEEDS_RAY
    assert suite.parse_only(None, quick=True) == [k for k in suite.RUN_ORDER if k != "P5"]
    assert suite.parse_only("p5, p1", quick=False) == ["P1", "P5"]
    with pytest.raises(SystemExit, match="unknown benchmark 'P10'"):
        suite.parse_only("P10", quick=False)


def test_render_command_rewrites_the_markdown_from_the_json_only(tmp_path: Path) -> None:
    doc = _doc([_result("P2")], _git_repo(tmp_path))
    json_path, md_path = tmp_path / "B.json", tmp_path / "B.md"
    results.write(doc, json_path)
    md_path.write_text("edited by hand\n")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", "--output-json", str(json_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert md_path.read_text() == report.markdown(doc)
