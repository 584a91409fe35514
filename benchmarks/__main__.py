"""The benchmark suite: ``python -m benchmarks [--quick] [--only P1,P3] [--output BENCHMARKS.md]``.

Runs hpo and its baseline for each benchmark in the same invocation and prints a table; a full run of
every benchmark also writes BENCHMARKS.md (``--output`` writes any run's report). Needs PostgreSQL
(``HPO_BENCH_PG`` or ``HPO_TEST_PG``, default the local server as ``postgres``); starts a local Ray
itself, shared by the benchmarks like a long-lived cluster.

    P1 prune-decision latency vs study size    P5 search efficiency (full mode only; real training)
    P2 control-plane cost per trial            P6 training-loop throughput
    P3 dispatch efficiency                     P7 worker reuse
    P4 peak PostgreSQL connections
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import PG_ADMIN, REPO, Result, Row, prepare_environment, ray_cluster, secs, warm_workers

ALL = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
#: P6 first, on a quiet machine; P7 before P4, whose eight parallel trials leave eight idle workers that Ray
#: would spread P7's trials over (P7 measures a worker's second and later trials).
RUN_ORDER = ("P6", "P1", "P2", "P3", "P7", "P4", "P5")
FULL_ONLY = ("P5",)
NEEDS_RAY = ("P1", "P2", "P3", "P4", "P5", "P7")
Runner = Callable[[str, bool], Result]


def _runner(key: str) -> Runner:
    """Import a benchmark lazily: P6 needs no Ray, P1's baseline none of torch."""
    import importlib

    module = {
        "P1": "p1_prune_latency",
        "P2": "p2_control_plane",
        "P3": "p3_dispatch",
        "P4": "p4_connections",
        "P5": "p5_search",
        "P6": "p6_train_loop",
        "P7": "p7_worker_reuse",
    }[key]
    return importlib.import_module(f"benchmarks.{module}").run


def parse_only(text: str | None, quick: bool) -> list[str]:
    if not text:
        return [k for k in RUN_ORDER if not (quick and k in FULL_ONLY)]
    keys = [k.strip().upper() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in ALL]
    if bad:
        raise SystemExit(f"--only: unknown benchmark {bad[0]!r} (choose from {', '.join(ALL)})")
    return [k for k in RUN_ORDER if k in keys]


def run_all(
    keys: Sequence[str], *, quick: bool, admin_url: str = PG_ADMIN, log: Callable[[str], None] = print
) -> list[Result]:
    """Run the benchmarks ``keys`` in order; a benchmark that raises becomes a failed row, and the rest run."""
    prepare_environment()
    results: list[Result] = []
    with ray_cluster() if any(k in NEEDS_RAY for k in keys) else _no_ray() as ray_start:
        if ray_start:
            log(f"Ray started in {secs(ray_start)}; warming 2 workers took {secs(warm_workers(2))}")
        for key in keys:
            load = os.getloadavg()[0]
            log(f"{key}: running ({'quick' if quick else 'full'}; load average {load:.1f}) ...")
            start = time.perf_counter()
            try:
                result = _runner(key)(admin_url, quick)
            except Exception as e:  # one broken benchmark must not hide the others' numbers
                traceback.print_exc()
                result = Result(key, "crashed")
                result.rows.append(Row("ran to the end", "yes", f"{type(e).__name__}: {e}"[:200], "", "", False))
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


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.report import markdown, text_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized pass (smaller sizes, no P5, no Ray Tune)")
    parser.add_argument("--only", help="comma-separated benchmarks to run, e.g. P1,P3")
    parser.add_argument(
        "--output",
        help="where to write the report (default: BENCHMARKS.md for a full run of every benchmark; a --quick or "
        "--only run prints its table and writes nothing unless given one)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    keys = parse_only(args.only, args.quick)
    logging.getLogger("ray").setLevel(logging.ERROR)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = run_all(keys, quick=args.quick)
    print()
    print(text_table(results))
    command = (
        "python -m benchmarks" + (" --quick" if args.quick else "") + (f" --only {','.join(keys)}" if args.only else "")
    )
    output = args.output or (None if args.quick or args.only else str(REPO / "BENCHMARKS.md"))
    if output and not args.no_write:
        Path(output).write_text(markdown(results, command=command, quick=args.quick, started=started))
        print(f"\nwrote {output}")
    return 1 if args.check and not all(r.passed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
