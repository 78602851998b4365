"""Scenario 3, latency: tasks at a steady rate, from ``enqueue`` to handler start.

    python -m bench.latency --runs 3 --tasks 500 --rate 100

The producer calls ``enqueue`` every 1/rate seconds and notes the wall-clock time
of each call; the ``bench.stamp`` handler returns the wall-clock time it started,
stored as the task's result. Latency = handler start - enqueue call (so it
includes the cost of ``enqueue`` itself).
"""

from __future__ import annotations

import argparse

from bench.common import Bench, Series, common_args, percentile, print_table
from bench.systems import each_run_of_ours


def main() -> None:
    parser = common_args(
        argparse.ArgumentParser(prog="bench.latency", description=__doc__), tasks=500
    )
    parser.add_argument("--rate", type=float, default=100.0, help="tasks per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--producer", choices=["enqueue", "aenqueue"], default="enqueue"
    )
    args = parser.parse_args()
    table = []
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        for db in bench.databases(args.postgres, sqlite=not args.no_sqlite):
            cols = {q: Series() for q in ("p50", "p95", "p99", "max")}
            for answer in each_run_of_ours(
                bench,
                db,
                args,
                [
                    "--type",
                    "bench.stamp",
                    "--rate",
                    str(args.rate),
                    "--collect",
                    "stamp",
                    "--producer",
                    args.producer,
                ],
            ):
                lat = answer["latencies_ms"]
                values = {
                    "p50": percentile(lat, 50),
                    "p95": percentile(lat, 95),
                    "p99": percentile(lat, 99),
                    "max": max(lat),
                }
                for q, v in values.items():
                    cols[q].add(v)
                print(
                    "  " + ", ".join(f"{q} {v:.1f} ms" for q, v in values.items()),
                    flush=True,
                )
            table.append(
                [
                    db.label,
                    str(args.workers),
                    args.producer,
                    *(cols[q].cell() for q in ("p50", "p95", "p99", "max")),
                ]
            )
    print_table(
        f"Latency: {args.tasks} tasks at {args.rate:g}/s, enqueue call to handler "
        "start; "
        f"median [min-max] of {args.runs} run(s)",
        ["store", "workers", "producer", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        table,
    )


if __name__ == "__main__":
    main()
