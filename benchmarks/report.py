"""The results as a terminal table, and BENCHMARKS.md rendered from BENCHMARKS.json alone.

``markdown(doc)`` is a pure function of the JSON document (``benchmarks.results``): no clock, no machine,
no git; ``python -m benchmarks --render`` re-renders it, and a test checks the committed pair agrees.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.common import Result, Row, fmt_ratio

COLUMNS = ("benchmark", "measure", "goal", "hpo", "baseline", "ratio", "result")


# ---------------------------------------------------------------------------------------------------
# The terminal table, from the results of this run


def verdict(row: Row) -> str:
    return "" if row.passed is None else "PASS" if row.passed else "FAIL"


def table_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    return [
        (r.key, row.metric, row.goal, row.hpo, row.baseline, row.ratio, verdict(row)) for r in results for row in r.rows
    ]


def text_table(results: Sequence[Result]) -> str:
    rows = [COLUMNS, *table_rows(results)]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(COLUMNS))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(cell[: widths[i]].ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# BENCHMARKS.md, from BENCHMARKS.json


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def ratio_cell(row: Mapping[str, Any]) -> str:
    """A row's ratio: with repeats, the median of the per-pair ratios, its 95% CI and n; else as measured."""
    c = row.get("comparison")
    if not c:
        return str(row["ratio"])
    lo, hi = (_num(v) for v in c["ratio_ci95"])
    return f"{fmt_ratio(_num(c['ratio_median']))} [{lo:.2f}, {hi:.2f}] (n={c['repeats']})"


def markdown_table(benchmarks: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for key, entry in benchmarks.items():
        for row in entry["rows"]:
            cells = [
                key,
                row["metric"],
                row["goal"],
                row["hpo"],
                row["baseline"],
                ratio_cell(row),
                row["verdict"] or "",
            ]
            shown = [_md_cell(c) for c in cells]
            if shown[-1]:
                shown[-1] = f"**{shown[-1]}**"
            lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines)


def fmt_date(iso: str) -> str:
    return datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fmt_commit(sha: str, dirty: bool) -> str:
    return f"`{sha[:10]}`" + (" with uncommitted changes (dirty)" if dirty else "")


def fmt_machine(m: Mapping[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, {m['os']}"


def fmt_value(value: Any) -> str:
    """A setting as a reader of the JSON sees it: ``true``, ``2``, ``null``; strings bare."""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def fmt_settings(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"`{k}: {fmt_value(v)}`" for k, v in settings.items()) or "none recorded"


def _passed(entry: Mapping[str, Any]) -> bool:
    return all(row["verdict"] != "FAIL" for row in entry["rows"])


def section(key: str, entry: Mapping[str, Any], top_machine: Mapping[str, Any]) -> list[str]:
    """One benchmark: its commit and run, settings, baselines with theirs, notes, missed goals."""
    out = [f"## {key}: {entry['title']}", ""]
    out.append(
        f"- Commit {fmt_commit(entry['git_sha'], entry['dirty'])}, {fmt_date(entry['date'])}, "
        f"{'quick' if entry['quick'] else 'full'} run, took {entry['seconds']:.0f} s"
    )
    if entry.get("machine") and entry["machine"] != top_machine:
        out.append(f"- Machine: {fmt_machine(entry['machine'])}")
    out.append(f"- hpo's settings: {fmt_settings(entry['settings'])}")
    baselines = entry["baselines"]
    if baselines:
        out.append("- Baselines, with the settings they ran with:")
        out += [f"  - {name}: {fmt_settings(settings)}" for name, settings in baselines.items()]
    out += [f"- {note}" for note in entry["notes"]]
    missed = [row for row in entry["rows"] if row["verdict"] == "FAIL"]
    if missed:
        out.append(
            "- Goal missed: " + "; ".join(f"{row['metric']} ({row['hpo']}, goal {row['goal']})" for row in missed)
        )
    if key == "P5":
        out += p5_paired(entry)
    return [*out, ""]


#: P5's comparisons read paired over its runs: (label, arm, other arm, measure)
P5_PAIRS = (
    ("(b) - (a) final test accuracy", "b", "a", "final_test"),
    ("(b) - (d) Ray Tune ASHA, anytime area", "b", "d", "area"),
    ("(b) - (d) Ray Tune ASHA, final test accuracy", "b", "d", "final_test"),
    ("(b) - (e) stock Optuna, anytime area", "b", "e", "area"),
    ("(b) - (e) stock Optuna, final test accuracy", "b", "e", "final_test"),
)


def p5_paired(entry: Mapping[str, Any]) -> list[str]:
    """P5 read as a skeptic reads it: each comparison paired over its runs, with a 95% t-interval, and a win only
    when the whole interval is on one side. Superseded for search claims by ``benchmarks/curves`` (issue 19)."""
    from benchmarks.curves.stats import paired

    runs = (entry.get("raw") or {}).get("summary", {}).get("per_run") or {}
    if not runs:
        return []
    out = [
        "- **Read paired over its runs** (95% t-intervals; a win only when the whole interval is on one side), "
        "P5 supports no search claim; the learning-curve benchmark replaces it for those "
        "(`benchmarks/curves/RESULTS.md`, issue 19):"
    ]
    for label, arm, other, measure in P5_PAIRS:
        p = paired([100 * r[arm][measure] for r in runs.values()], [100 * r[other][measure] for r in runs.values()])
        out.append(f"  - {label}: {p.mean:+.2f} pp [{p.low:+.2f}, {p.high:+.2f}] (n={p.n}): {p.verdict()}")
    return out


def markdown(doc: Mapping[str, Any]) -> str:
    """BENCHMARKS.md for the BENCHMARKS.json document ``doc`` (pure: the same document, the same bytes)."""
    benchmarks: Mapping[str, Mapping[str, Any]] = doc["benchmarks"]
    v = doc["versions"]
    passed = sum(_passed(e) for e in benchmarks.values())
    shas = {(e["git_sha"], e["dirty"]) for e in benchmarks.values()}
    out = [
        "# Benchmarks",
        "",
        "Rendered from BENCHMARKS.json (the raw samples, settings and provenance of every figure below); do not "
        "edit by hand. Regenerate with `make bench` (`python -m benchmarks`; `--only P1,P3` reruns some and merges "
        "them in; `--render` re-renders this file from the JSON).",
        "",
        "**Search efficiency** is measured by the learning-curve benchmark, not here: "
        "[benchmarks/curves/RESULTS.md](benchmarks/curves/RESULTS.md) (rendered from `benchmarks/curves/results/`; "
        "protocol `benchmarks/curves/PROTOCOL.md`). P5 below is kept as the live run it was; read paired, it "
        "supports no search claim.",
        "",
        f"- Latest run: `{doc['command']}`, {fmt_date(doc['date'])}, commit {fmt_commit(doc['git_sha'], doc['dirty'])}"
        + ("" if len(shas) == 1 else "; the benchmarks come from different commits (see each section)"),
        f"- Machine: {fmt_machine(doc['machine'])}",
        f"- Versions: Python {v['python']}, Optuna {v['optuna']}, Ray {v['ray']}, PyTorch {v['torch']}, "
        f"SQLAlchemy {v['sqlalchemy']}, PostgreSQL {v['postgresql']}",
        f"- Benchmarks meeting every goal: {passed}/{len(benchmarks)}",
        "",
        "Ratios are hpo / baseline. hpo and its baseline run in the same invocation, on the same database server "
        "and the same Ray; where a row shows `[lo, hi] (n=N)`, the two ran N times, interleaved, the ratio is the "
        "median of the N paired ratios with its 95% bootstrap confidence interval, and PASS/FAIL is decided on "
        "that median. Absolute times are printed, not asserted: the load average at each benchmark's start is in "
        "its notes.",
        "",
        markdown_table(benchmarks),
        "",
    ]
    for key, entry in benchmarks.items():
        out += section(key, entry, doc["machine"])
    return "\n".join(out)
