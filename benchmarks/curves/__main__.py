"""``python -m benchmarks.curves record [--tasks a,b] [--threads 1] [--shard k/n] [--limit N]``,
``replay`` and ``report`` (see ``PROTOCOL.md``)."""

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
    args, rest = parser.parse_known_args(argv)
    if args.command == "record":
        k, n = (int(x) for x in args.shard.split("/"))
        from benchmarks.curves.record import record

        record([t for t in args.tasks.split(",") if t], args.threads, args.limit, (k, n))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
