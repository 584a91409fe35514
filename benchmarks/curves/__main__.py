"""``python -m benchmarks.curves record [--tasks a,b] [--threads 1] [--shard k/n] [--limit N]``,
``replay``, ``live`` and ``report`` (see ``PROTOCOL.md`` and ``LIVE-PROTOCOL.md``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from benchmarks.curves import tasks

    parser = argparse.ArgumentParser(prog="python -m benchmarks.curves", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the missing curves (resumable)")
    rec.add_argument("--tasks", default=",".join(tasks.ALL), help="comma-separated task names")
    rec.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    rec.add_argument("--shard", default="0/1", help="k/n: this process records runs k, k+n, k+2n, ...")
    rec.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    rep = sub.add_parser("replay", help="replay searches on the recorded curves (PROTOCOL.md)")
    rep.add_argument("phase", choices=("tuning", "claim", "apart"), help="which tasks, seeds and arms")
    rep.add_argument("--seeds", default=None, help="first:last replay seeds (default: the protocol's for the phase)")
    rep.add_argument("--jobs", type=int, default=2, help="processes")
    rep.add_argument("--out", default=None, help="results file name (default: the phase's)")
    live = sub.add_parser("live", help="real sweeps, hpo vs Ray Tune ASHA (LIVE-PROTOCOL.md; resumable)")
    live.add_argument("--hours", type=float, default=None, help="start no cell after this many hours")
    live.add_argument("--summary-only", action="store_true", help="only rewrite results/live.json")
    sub.add_parser("report", help="render RESULTS.md from results/*.json")
    args = parser.parse_args(argv)
    if args.command == "live":
        return _live(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "report":
        from benchmarks.curves.report import write

        print(write())
        return 0
    if args.command == "record":
        k, n = (int(x) for x in args.shard.split("/"))
        from benchmarks.curves.record import record

        record([t for t in args.tasks.split(",") if t], args.threads, args.limit, (k, n))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


def _live(args: argparse.Namespace) -> int:
    import time

    from benchmarks.common import PG_ADMIN
    from benchmarks.curves import live

    if not args.summary_only:
        deadline = None if args.hours is None else time.time() + 3600 * args.hours
        live.record(PG_ADMIN, deadline=deadline)
    print(live.write_summary())
    return 0


def _replay(args: argparse.Namespace) -> int:
    from benchmarks.curves import replay, tasks

    names = {"tuning": tasks.TUNING, "claim": tasks.CLAIM, "apart": tasks.APART}[args.phase]
    if args.seeds:
        first, last = (int(x) for x in args.seeds.split(":"))
        seeds: tuple[int, ...] = tuple(range(first, last + 1))
    else:
        seeds = replay.TUNING_SEEDS if args.phase == "tuning" else replay.CLAIM_SEEDS
    arms = replay.phase_arms(args.phase)
    result = replay.measure(args.phase, names, seeds, arms, args.jobs)
    print(replay.write(result, args.out or args.phase))
    return 0


if __name__ == "__main__":
    sys.exit(main())
