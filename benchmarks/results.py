"""The benchmark results as data: BENCHMARKS.json, with the commit, machine and versions that made them.

One document per repository; each benchmark's entry carries its own provenance (``git_sha``, ``dirty``,
``date``, ``quick``), so a run of a few benchmarks merges into it without restamping the others. The top
level describes the latest run. BENCHMARKS.md is rendered from this document alone (``benchmarks.report``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Result, Row
from trials.reporting import json_safe

SCHEMA = 1
JSON_PATH = REPO / "BENCHMARKS.json"


#: what the suite itself writes: results and figures, not code (a run that rewrites them is not dirty)
OUTPUTS = ("BENCHMARKS.json", "BENCHMARKS.md", "docs/p5_anytime.png")


def git_state(repo: Path = REPO) -> tuple[str, bool]:
    """HEAD's commit and whether the working tree differs from it: any line of ``git status --porcelain``
    (a changed, staged, deleted or untracked file) other than the suite's own ``OUTPUTS`` makes it dirty.
    ``("unknown", True)`` outside git."""
    try:
        sha = _git(repo, "rev-parse", "HEAD").strip()
        status = _git(repo, "status", "--porcelain", "--untracked-files=all")
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    changed = [line[3:].strip() for line in status.splitlines() if line.strip()]
    return sha, any(path not in OUTPUTS for path in changed)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def machine() -> dict[str, Any]:
    """CPU model, cores and OS of this machine."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu or "unknown", "cores": os.cpu_count() or 0, "os": f"{platform.system()} {platform.release()}"}


def versions(admin_url: str) -> dict[str, str]:
    """The versions these numbers depend on; a package that is not installed is ``"not installed"``."""
    import importlib

    out = {"python": platform.python_version()}
    for name in ("optuna", "ray", "torch", "sqlalchemy"):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            out[name] = "not installed"
    out["postgresql"] = _pg_version(admin_url)
    return out


def _pg_version(admin_url: str) -> str:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(admin_url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return str(conn.execute(sqlalchemy.text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
    except Exception:  # informational only: a benchmark that needs the server reports its own failure
        return "unknown"


def now() -> str:
    """The current UTC time as ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def row_entry(row: Row) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "metric": row.metric,
        "goal": row.goal,
        "hpo": row.hpo,
        "baseline": row.baseline,
        "ratio": row.ratio,
        "verdict": None if row.passed is None else "PASS" if row.passed else "FAIL",
    }
    if row.comparison is not None:
        entry["comparison"] = row.comparison.as_dict()
    return entry


def result_entry(
    result: Result, *, quick: bool, git_sha: str, dirty: bool, date: str, machine: Mapping[str, Any]
) -> dict[str, Any]:
    """One benchmark's entry: its provenance, settings, baselines, rows (with their samples), notes, raw."""
    return {
        "title": result.title,
        "git_sha": git_sha,
        "dirty": dirty,
        "date": date,
        "quick": quick,
        "seconds": round(result.seconds, 3),
        "machine": dict(machine),
        "passed": result.passed,
        "settings": result.settings,
        "baselines": result.baselines,
        "rows": [row_entry(row) for row in result.rows],
        "notes": list(result.notes),
        "raw": result.raw,
    }


def document(
    results: Sequence[Result],
    *,
    quick: bool,
    command: str,
    admin_url: str,
    dates: Mapping[str, str],
    previous: Mapping[str, Any] | None = None,
    repo: Path = REPO,
    started: tuple[str, bool] | None = None,
) -> dict[str, Any]:
    """The BENCHMARKS.json document for ``results`` (``dates``: each benchmark's start), merged into
    ``previous``: its other benchmarks are kept as they were, with their own commits and dates.

    ``started`` is ``git_state`` when the run began: the commit is that one, and the run is dirty if the
    tree was dirty then or changed while it ran (HEAD moved, files edited)."""
    sha, dirty = now_state = git_state(repo)
    if started is not None:
        sha, dirty = started[0], started[1] or started != now_state
    here = machine()
    merged = dict((previous or {}).get("benchmarks", {}))
    for r in results:
        merged[r.key] = result_entry(r, quick=quick, git_sha=sha, dirty=dirty, date=dates[r.key], machine=here)
    doc = {
        "schema": SCHEMA,
        "git_sha": sha,
        "dirty": dirty,
        "date": now(),
        "machine": here,
        "versions": versions(admin_url),
        "command": command,
        "benchmarks": {key: merged[key] for key in sorted(merged, key=_order)},
    }
    return normalise(doc)


def _order(key: str) -> tuple[int, str]:
    digits = key[1:]
    return (int(digits), key) if digits.isdigit() else (1 << 30, key)


def normalise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` as it reads back from JSON: string keys, lists for tuples, NaN and infinities as null."""
    out: dict[str, Any] = json.loads(dumps(doc))
    return out


def dumps(doc: Mapping[str, Any]) -> str:
    # default=str: a stray non-JSON value in a benchmark's raw dict must not lose a whole run's results
    return json.dumps(json_safe(doc), indent=2, allow_nan=False, default=str) + "\n"


def load(path: Path = JSON_PATH) -> dict[str, Any] | None:
    """The document at ``path``, or None when there is none yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    doc: dict[str, Any] = json.loads(text)
    return doc


def write(doc: Mapping[str, Any], path: Path = JSON_PATH) -> None:
    """Write ``doc`` atomically (a half-written BENCHMARKS.json would lose every earlier benchmark)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(doc))
    os.replace(tmp, path)
