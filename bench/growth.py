"""Scenario 5, memory and growth: RSS of a worker and time per task as the store fills.

    python -m bench.growth --tasks 103000 --chunk 1000 --levels 1000,10000,100000 \
        --rss-at 1000,100000

One long-lived ``runworker`` (``--workers``) runs ``--tasks`` no-op tasks, enqueued
through ``enqueue`` in chunks of ``--chunk``; each chunk is timed from its first
enqueue until its last task finished. Every task stays in the store, so the store
grows with real finished rows. Reported: the worker's RSS after the ``--rss-at``
task counts, and the time per task of the ``--runs`` chunks that start with at
least each ``--levels`` count of tasks already in the store, and the CPU time per
task of each program in those chunks (machine speed moves wall time by up to
2x here; CPU time shows whether the work per task grows with the store).
"""

from __future__ import annotations

import argparse

from bench.common import (
    CPU_PARTS,
    DEFAULT_CONCURRENCY,
    Bench,
    Series,
    drive,
    print_table,
    start_workers,
    stopping,
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.growth", description=__doc__)
    parser.add_argument("--tasks", type=int, default=103_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--levels", default="1000,10000,100000")
    parser.add_argument("--rss-at", default="1000,100000")
    parser.add_argument("--runs", type=int, default=3, help="chunks timed per level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    need = max(levels) + args.runs * args.chunk
    if args.tasks < need:
        parser.error(f"--tasks must be at least {need} for these levels and runs")
    time_rows, rss_rows, cpu_rows = [], [], []
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        for db in bench.databases(args.postgres, sqlite=not args.no_sqlite):
            bench.flush_redis()
            env = bench.env(db)
            drive(env, ["reset"], 120, bench.logs)
            procs = start_workers(
                bench, env, args.workers, args.concurrency, f"growth-{db.label}"
            )
            print(
                f"{db.label}: {args.tasks} tasks in chunks of {args.chunk} ...",
                flush=True,
            )
            with stopping(procs):
                answer = drive(
                    env,
                    [
                        "growth",
                        "--tasks",
                        str(args.tasks),
                        "--chunk",
                        str(args.chunk),
                        "--workers",
                        str(args.workers),
                        "--rss-at",
                        args.rss_at,
                        "--timeout",
                        str(args.timeout),
                    ],
                    args.timeout + 300,
                    bench.logs,
                )
            for level in levels:
                chunks = [c for c in answer["chunks"] if c["in_store"] >= level][
                    : args.runs
                ]
                per_task = Series([c["ms_per_task"] for c in chunks])
                cpu_rows.append(
                    [db.label, f"{level:,}"]
                    + [
                        "-"
                        if db.label == "sqlite" and part.startswith("postgres")
                        else Series([c["cpu_ms_per_task"][part] for c in chunks]).cell(
                            "{:.2f}"
                        )
                        for part in CPU_PARTS
                    ]
                    + [
                        Series(
                            [sum(c["cpu_ms_per_task"].values()) for c in chunks]
                        ).cell("{:.2f}")
                    ]
                )
                time_rows.append(
                    [
                        db.label,
                        f"{level:,}",
                        f"{chunks[0]['in_store']:,}" if chunks else "-",
                        per_task.cell("{:.2f}"),
                        f"{1000 / per_task.median:.0f}" if chunks else "-",
                    ]
                )
            for sample in answer["rss"]:
                rss_rows.append(
                    [
                        db.label,
                        f"{sample['after']:,}",
                        ", ".join(f"{mb:.1f}" for mb in sample["rss_mb"]),
                    ]
                )
    print_table(
        f"Time per task by tasks already in the store (chunks of {args.chunk}, "
        f"median [min-max] of {args.runs} chunk(s), {args.workers} worker(s))",
        ["store", "level", "first chunk starts at", "ms per task", "tasks/s"],
        time_rows,
    )
    print_table(
        "CPU ms per task by tasks already in the store (the same chunks; the "
        "producer's up to the end of its enqueue loop, the rest up to the last "
        "task's end; PostgreSQL sessions by who opened them)",
        ["store", "level", *CPU_PARTS, "all"],
        cpu_rows,
    )
    print_table(
        "Worker RSS (MB) after N tasks run by this worker set",
        ["store", "tasks run", "RSS MB per worker"],
        rss_rows,
    )


if __name__ == "__main__":
    main()
