"""The benchmark suite: ``python -m benchmarks [--quick] [--only P1,P3] [--render]``.

Runs hpo and its baseline for each benchmark in the same invocation and prints a table. A full run (all
benchmarks or ``--only`` some) merges its results into BENCHMARKS.json (raw samples, settings, baselines,
commit, machine, versions) and renders BENCHMARKS.md from it; ``--render`` only re-renders. A full run
exits 1 when a goal is missed (``--check`` does the same for a quick one). Needs PostgreSQL
(``HPO_BENCH_PG`` or ``HPO_TEST_PG``, default the local server as ``postgres``); starts a local Ray itself,
shared by the benchmarks like a long-lived cluster.

    P1 prune-decision latency vs study size    P6 training-loop throughput
    P2 control-plane cost per trial            P7 worker reuse
    P3 dispatch efficiency                     P8 useful-work fraction of a real sweep
    P4 peak PostgreSQL connections             P9 read side at 10,000 trials
    P5 search efficiency (full mode only; real training)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import results as results_json
from benchmarks.common import PG_ADMIN, Result, Row, prepare_environment, ray_cluster, secs, warm_workers


@dataclass(frozen=True)
class Benchmark:
    module: str  # under benchmarks/, imported only when the benchmark runs
    title: str  # what a crashed benchmark's row is titled
    needs_ray: bool = True
    full_only: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    "P1": Benchmark("p1_prune_latency", "prune-decision latency vs study size"),
    "P2": Benchmark("p2_control_plane", "control-plane cost per trial"),
    "P3": Benchmark("p3_dispatch", "dispatch efficiency"),
    "P4": Benchmark("p4_connections", "peak PostgreSQL connections"),
    "P5": Benchmark("p5_search", "search efficiency", full_only=True),
    "P6": Benchmark("p6_train_loop", "training-loop throughput", needs_ray=False),
    "P7": Benchmark("p7_worker_reuse", "worker reuse"),
    "P8": Benchmark("p8_useful_work", "useful-work fraction of a real sweep"),
    "P9": Benchmark("p9_read_side", "read side at 10,000 trials", needs_ray=False),
}
ALL = tuple(BENCHMARKS)
#: P6 first, on a quiet machine. P1 and P2 (timing gates) before P9 fills the database server with a
#: 10,000-trial study. P7 before P8 and P4: P8's trials leave workers with torch imported and P4's eight
#: parallel trials eight idle workers, which Ray would spread P7's trials over (P7 measures a worker's second
#: and later trials). P5, the longest, last.
RUN_ORDER = ("P6", "P1", "P2", "P9", "P3", "P7", "P8", "P4", "P5")
FULL_ONLY = tuple(k for k, b in BENCHMARKS.items() if b.full_only)
NEEDS_RAY = tuple(k for k, b in BENCHMARKS.items() if b.needs_ray)
Runner = Callable[[str, bool], Result]


def _runner(key: str) -> Runner:
    """Import a benchmark lazily: P6 needs no Ray, P1's baseline none of torch, and a benchmark whose module
    is missing or broken becomes a crashed row instead of stopping the suite at start."""
    import importlib

    runner: Runner = importlib.import_module(f"benchmarks.{BENCHMARKS[key].module}").run
    return runner


def parse_only(text: str | None, quick: bool) -> list[str]:
    if not text:
        return [k for k in RUN_ORDER if not (quick and k in FULL_ONLY)]
    keys = [k.strip().upper() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in ALL]
    if bad:
        raise SystemExit(f"--only: unknown benchmark {bad[0]!r} (choose from {', '.join(ALL)})")
    return [k for k in RUN_ORDER if k in keys]


def crashed(key: str, error: BaseException) -> Result:
    result = Result(key, f"{BENCHMARKS[key].title} (crashed)")
    result.rows.append(Row("ran to the end", "yes", f"{type(error).__name__}: {error}"[:200], "", "", False))
    return result


def run_all(
    keys: Sequence[str],
    *,
    quick: bool,
    admin_url: str = PG_ADMIN,
    log: Callable[[str], None] = print,
    dates: dict[str, str] | None = None,
) -> list[Result]:
    """Run the benchmarks ``keys`` in order; a benchmark that raises becomes a failed row, and the rest run.
    ``dates`` receives each benchmark's start time (ISO 8601, UTC)."""
    prepare_environment()
    results: list[Result] = []
    with ray_cluster() if any(k in NEEDS_RAY for k in keys) else _no_ray() as ray_start:
        if ray_start:
            log(f"Ray started in {secs(ray_start)}; warming 2 workers took {secs(warm_workers(2))}")
        for key in keys:
            load = os.getloadavg()[0]
            log(f"{key}: running ({'quick' if quick else 'full'}; load average {load:.1f}) ...")
            if dates is not None:
                dates[key] = results_json.now()
            start = time.perf_counter()
            try:
                result = _runner(key)(admin_url, quick)
            except Exception as e:  # one broken benchmark must not hide the others' numbers
                traceback.print_exc()
                result = crashed(key, e)
            result.seconds = time.perf_counter() - start
            result.notes.append(f"Load average (1 min) at the start: {load:.1f} on {os.cpu_count()} cores.")
            log(f"{key}: done in {secs(result.seconds)}")
            results.append(result)
    return sorted(results, key=lambda r: ALL.index(r.key))


class _no_ray:  # a stand-in for ray_cluster()
    def __enter__(self) -> float:
        return 0.0

    def __exit__(self, *exc: object) -> None:
        return None


def exit_code(results: Sequence[Result], *, quick: bool, check: bool) -> int:
    """1 when a goal is missed (or a benchmark crashed) in a full run, or in a quick run with ``--check``."""
    gated = check or not quick
    return 1 if gated and not all(r.passed for r in results) else 0


def render(json_path: Path, md_path: Path) -> None:
    """Write BENCHMARKS.md from BENCHMARKS.json, nothing else."""
    from benchmarks.report import markdown

    doc = results_json.load(json_path)
    if doc is None:
        raise SystemExit(f"--render: {json_path} does not exist (run the benchmarks first)")
    md_path.write_text(markdown(doc))
    print(f"rendered {md_path} from {json_path}")


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.report import markdown, text_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized pass (smaller sizes, no P5)")
    parser.add_argument("--only", help="comma-separated benchmarks to run, e.g. P1,P3 (merged into the JSON)")
    parser.add_argument(
        "--output-json",
        help="the results document to merge into (default BENCHMARKS.json for a full run; a --quick run writes "
        "none unless given one)",
    )
    parser.add_argument(
        "--output",
        help="the markdown rendered from the results document (default BENCHMARKS.md beside the default JSON)",
    )
    parser.add_argument("--render", action="store_true", help="only re-render the markdown from the JSON")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed (always so in a full run)")
    args = parser.parse_args(argv)
    json_path = Path(args.output_json) if args.output_json else results_json.JSON_PATH
    md_path = Path(args.output) if args.output else json_path.with_suffix(".md")
    if args.render:
        render(json_path, md_path)
        return 0
    keys = parse_only(args.only, args.quick)
    logging.getLogger("ray").setLevel(logging.ERROR)
    dates: dict[str, str] = {}
    started = results_json.git_state()  # the code that runs; the run is dirty if it changes meanwhile
    results = run_all(keys, quick=args.quick, dates=dates)
    print()
    print(text_table(results))
    command = " ".join(
        [
            "python -m benchmarks",
            *(["--quick"] if args.quick else []),
            *(["--only", ",".join(keys)] if args.only else []),
        ]
    )
    if not args.no_write and (args.output_json or args.output or not args.quick):
        merge_into = args.output_json or not args.quick  # a quick run with --output only: its own markdown
        doc = results_json.document(
            results,
            quick=args.quick,
            command=command,
            admin_url=PG_ADMIN,
            dates=dates,
            previous=results_json.load(json_path) if merge_into else None,
            started=started,
        )
        if merge_into:
            results_json.write(doc, json_path)
            print(f"\nwrote {json_path}")
        md_path.write_text(markdown(doc))
        print(f"wrote {md_path} (rendered from the results document)")
    return exit_code(results, quick=args.quick, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
