"""Overload: a burst far beyond the channel layer's capacity, and its recovery.

    python -m bench.overload --runs 3 --tasks 20000 \
        --postgres postgres://postgres@127.0.0.1:5432/bench

``enqueue`` in a burst from one process, as fast as it goes (by default in one
transaction, so that the rings leave together at the commit: see
``bench.burst``), into the ``bench`` channel served by 2 ``manage.py runworker``
processes, until every task has succeeded in the store. Each run does it twice,
with a channel that holds ``--capacities`` messages (default: channels-redis's
own 100, where most rings are refused with ``ChannelFull`` and the store must
ring them again, and 100,000, where none is): the first capacity's time over
the last one's is how much an overload costs. Runs interleave the capacities,
so a noisy minute hurts both alike.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import (
    Bench,
    Database,
    Series,
    common_args,
    drive,
    print_table,
    ratio,
    run_module,
    start_workers,
    stopping,
)

CAPACITIES = "100,100000"


def main() -> None:
    args = _parser().parse_args()
    capacities = [int(c) for c in args.capacities.split(",")]
    rows: dict[tuple[str, int], dict[str, Series]] = {}
    with Bench(capacity=capacities[0], keep=args.keep_logs) as bench:
        dbs = bench.databases(args.postgres, sqlite=not args.no_sqlite)
        for run in range(1, args.runs + 1):
            for db in dbs:
                for capacity in capacities:
                    print(
                        f"run {run}/{args.runs}: {db.label} capacity {capacity} ...",
                        flush=True,
                    )
                    # Every child of the run reads CHANNEL_CAPACITY from here.
                    bench.capacity = capacity
                    try:
                        answer = run_burst(bench, db, args)
                    except Exception as err:  # one failed run must not hide the rest
                        print(f"  FAILED: {err}", flush=True)
                        continue
                    _add(rows.setdefault((db.label, capacity), _row()), answer)
                    print(f"  {_summary(answer)}", flush=True)
    _report(args, [(db.label, c) for db in dbs for c in capacities], rows)


def _parser() -> argparse.ArgumentParser:
    parser = common_args(
        argparse.ArgumentParser(prog="bench.overload", description=__doc__),
        tasks=20_000,
    )
    parser.add_argument(
        "--capacities",
        default=CAPACITIES,
        help="comma list of channel-layer capacities, each its own row; ratios "
        "are to the last one (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="runworker processes")
    parser.add_argument(
        "--producer",
        choices=["atomic", "enqueue"],
        default="atomic",
        help="atomic: every enqueue in one transaction, rung together at the "
        "commit; enqueue: one transaction each (see bench.burst)",
    )
    return parser


def run_burst(bench: Bench, db: Database, args: argparse.Namespace) -> dict[str, Any]:
    """One run: a flushed Redis, an empty store, the workers, then the burst."""
    bench.flush_redis()
    env = bench.env(db)
    drive(env, ["reset"], 120, bench.logs)
    procs = start_workers(
        bench, env, args.workers, args.concurrency, f"overload-{db.label}"
    )
    with stopping(procs):
        command = [
            "--tasks",
            str(args.tasks),
            "--workers",
            str(args.workers),
            "--producer",
            args.producer,
            "--timeout",
            str(args.timeout),
        ]
        answer = burst(env, command, args.timeout + 120, bench)
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise RuntimeError(f"worker(s) died during the run: {dead}")
    return answer


def burst(
    env: dict[str, str], command: list[str], timeout: float, bench: Bench
) -> dict[str, Any]:
    """``python -m bench.burst COMMAND``; its JSON answer."""
    return run_module("bench.burst", env, command, timeout, bench.logs)


def _row() -> dict[str, Series]:
    return {
        "total": Series(),
        "enqueue": Series(),
        "rate": Series(),
        "zcount": Series(),
    }


def _add(row: dict[str, Series], answer: dict[str, Any]) -> None:
    row["total"].add(answer["total_s"])
    row["enqueue"].add(answer["enqueue_s"])
    row["rate"].add(answer["tasks"] / answer["total_s"])
    # Each send asks ZCOUNT once, and so does a look at a channel's room.
    row["zcount"].add(answer["redis_per_task"].get("zcount", 0.0))


def _summary(answer: dict[str, Any]) -> str:
    return (
        f"total {answer['total_s']:.2f} s (enqueue {answer['enqueue_s']:.2f} s), "
        f"{answer['tasks'] / answer['total_s']:.0f} tasks/s, "
        f"duplicates {answer['duplicates']}, redis/task {answer['redis_per_task']}"
    )


def _report(
    args: argparse.Namespace,
    plan: list[tuple[str, int]],
    rows: dict[tuple[str, int], dict[str, Series]],
) -> None:
    table = []
    for label, capacity in plan:
        row = rows.get((label, capacity)) or _row()
        base = rows.get((label, plan[-1][1])) or _row()
        table.append(
            [
                label,
                f"{capacity:,}",
                row["total"].cell("{:.2f}"),
                row["enqueue"].cell("{:.2f}"),
                row["rate"].cell("{:.0f}"),
                ratio(row["total"].median, base["total"].median),
                row["zcount"].cell("{:.2f}"),
            ]
        )
    print_table(
        f"Overload: {args.tasks} no-op tasks enqueued in a burst ({args.producer}), "
        f"{args.workers} workers; median [min-max] of {args.runs} run(s)",
        [
            "store",
            "capacity",
            "total s",
            "enqueue s",
            "tasks/s",
            "total / last capacity's",
            "ZCOUNT/task",
        ],
        table,
    )


if __name__ == "__main__":
    main()
