"""Every system, three measures, one invocation: drain, end to end, producer.

    python -m bench.peers --runs 3 --tasks 10000 \
        --postgres postgres://postgres@127.0.0.1:5432/bench

For each system and run, interleaved (run 1 of every system, then run 2, ...):

- **producer alone**: one process sends ``--tasks`` no-op tasks, one call at a
  time (as a web view does), with no worker running; tasks per second of the
  calls alone. For ours also ``enqueue_many`` in calls of 1,000.
- **drain**: that backlog, then the workers start; from the first task's run
  to the last's (the workers' rate, without their start-up or the producer).
- **end to end**: the workers run and are warmed up; the producer sends the
  tasks in a burst; from the first call until every task has run.

Systems, each in the configuration its row names (``docs/benchmarks.md``):
ours (2 ``runworker`` processes at their default concurrency, on PostgreSQL
and SQLite), stock Channels, Celery prefork at its defaults and in its durable
configuration (``acks_late`` with ``task_reject_on_worker_lost``), Dramatiq at
its defaults (8 threads per process), and the durable peers django-tasks-db and
procrastinate on the same PostgreSQL. Every compared system counts a finished
task the same way (one pipelined Redis round trip, ``bench.counters``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Bench,
    Database,
    Series,
    common_args,
    drive,
    migrate,
    print_table,
    ratio,
)
from bench.systems import (
    COMPARED,
    DATABASE_PEERS,
    compared_env,
    run_compared,
    run_compared_drain,
    run_ours,
    run_ours_drain,
)

#: The columns of the ratio table, in order.
MEASURES = ("drain", "e2e", "producer")

CONFIGURATION = {
    "ours": "retrying_consumers: runworker --concurrency 32 (default)",
    "stock": "stock Channels Worker, plain AsyncConsumer (no retries, no state)",
    "celery": "Celery 5 prefork, defaults (acks early, prefetch x4)",
    "celery-durable": "Celery 5 prefork, acks_late + task_reject_on_worker_lost",
    "dramatiq": "Dramatiq, defaults (8 threads per process)",
    "django-tasks-db": "django-tasks-db db_worker, defaults",
    "procrastinate": "procrastinate worker, defaults (concurrency 1)",
}


@dataclass
class Row:
    """One system on one store: a series of tasks/s per measure."""

    system: str
    store: str
    rates: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    failed: list[str] = field(default_factory=list)

    def median(self, measure: str) -> float:
        series = self.rates.get(measure)
        return series.median if series and series.values else float("nan")


def main() -> None:
    parser = common_args(
        argparse.ArgumentParser(prog="bench.peers", description=__doc__),
        tasks=10_000,
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="sample the first worker of each drain of ours with py-spy into DIR "
        "(collapsed stacks; summarise with python -m bench.profile_summary)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(["ours", *COMPARED]),
        help="comma list of: ours, " + ", ".join(COMPARED),
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    systems = args.systems.split(",")
    unknown = set(systems) - {"ours", *COMPARED}
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if DATABASE_PEERS & set(systems) and not args.postgres:
        parser.error(", ".join(sorted(DATABASE_PEERS)) + " need --postgres")
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        dbs = bench.databases(args.postgres, sqlite=not args.no_sqlite)
        postgres = next((db for db in dbs if db.label == "postgres"), None)
        if postgres is not None and DATABASE_PEERS & set(systems):
            migrate(compared_env(bench, "procrastinate", postgres), bench.logs)
        rows = plan(systems, dbs)
        for run in range(1, args.runs + 1):
            for row in rows:
                db = next((d for d in dbs if d.label == row.store), None)
                for measure, rate in measure_once(bench, row, db, args, run):
                    row.rates[measure].add(rate)
        report(args, rows)
    failed = [f"{row.system} {row.store}" for row in rows if row.failed]
    if failed:
        raise SystemExit(f"failed runs: {', '.join(failed)}")


def plan(systems: list[str], dbs: list[Database]) -> list[Row]:
    rows = []
    for system in systems:
        if system == "ours":
            rows += [Row("ours", db.label) for db in dbs]
        elif system in DATABASE_PEERS:
            rows.append(Row(system, "postgres"))
        else:
            rows.append(Row(system, "-"))
    return rows


def measure_once(
    bench: Bench, row: Row, db: Database | None, args: argparse.Namespace, run: int
) -> list[tuple[str, float]]:
    """One run of every measure of ``row``: (measure, tasks/s) pairs."""
    print(f"run {run}/{args.runs}: {row.system} {row.store} ...", flush=True)
    found: list[tuple[str, float]] = []
    common = {"workers": args.workers, "tasks": args.tasks, "timeout": args.timeout}
    steps: list[tuple[str, Any]] = []
    if row.system == "ours":
        assert db is not None
        ours = {**common, "concurrency": args.concurrency}
        steps = [
            (
                "drain",
                lambda: run_ours_drain(
                    bench,
                    db,
                    **ours,
                    profile=args.profile / f"drain-{db.label}-run{run}.txt"
                    if args.profile
                    else None,
                ),
            ),
            ("e2e", lambda: run_ours(bench, db, **ours)),
            ("bulk", lambda: bulk_producer(bench, db, args)),
        ]
    else:
        steps = [
            ("drain", lambda: run_compared_drain(bench, row.system, db=db, **common)),
            ("e2e", lambda: run_compared(bench, row.system, db=db, **common)),
        ]
    for step, go in steps:
        try:
            answer = go()
        except Exception as err:  # one failed run must not hide the others
            print(f"  {step} FAILED: {err}", flush=True)
            row.failed.append(step)
            continue
        if step == "drain":
            found.append(("producer", answer["tasks"] / answer["enqueue_s"]))
        if step == "bulk":
            found.append(("bulk", answer["tasks"] / answer["enqueue_s"]))
        else:
            found.append((step, answer["tasks"] / answer["total_s"]))
    print("  " + ", ".join(f"{m} {r:.0f}/s" for m, r in found), flush=True)
    return found


def bulk_producer(
    bench: Bench, db: Database, args: argparse.Namespace
) -> dict[str, Any]:
    """Ours' producer with ``enqueue_many`` (1,000 per call), no worker running."""
    bench.flush_redis()
    env = bench.env(db)
    drive(env, ["reset"], 120, bench.logs)
    answer = drive(
        env,
        ["enqueue-only", "--tasks", str(args.tasks), "--producer", "enqueue_many"],
        args.timeout,
        bench.logs,
    )
    drive(env, ["reset"], 120, bench.logs)
    return answer


def report(args: argparse.Namespace, rows: list[Row]) -> None:
    def cell(row: Row, measure: str) -> str:
        series = row.rates.get(measure)
        text = series.cell("{:.0f}") if series and series.values else "-"
        return text + (" (FAILED runs)" if measure in row.failed else "")

    def micros(row: Row, measure: str) -> str:
        rate = row.median(measure)
        return f"{1e6 / rate:.0f}" if rate == rate else "-"

    print_table(
        f"{args.tasks} no-op tasks, {args.workers} worker processes; tasks/s, "
        f"median [min-max] of {args.runs} run(s)",
        ["system (configuration)", "store", "drain", "end to end", "producer"],
        [
            [CONFIGURATION[row.system], row.store, *(cell(row, m) for m in MEASURES)]
            for row in rows
        ],
    )
    producer_rows = [
        [CONFIGURATION[row.system], row.store, per_call, cell(row, m), micros(row, m)]
        for per_call, m in (("1", "producer"), ("1,000", "bulk"))
        for row in rows
        if m == "producer" or row.system == "ours"
    ]
    print_table(
        "The producer alone: one process, no worker running",
        ["system", "store", "tasks per call", "tasks/s", "µs per task"],
        producer_rows,
    )
    print_table(
        "Ratios of medians, ours on each store / the other (same invocation)",
        ["ours", "against", "drain", "end to end", "producer"],
        [
            [
                f"ours {ours.store}",
                f"{other.system} {other.store}",
                *(ratio(ours.median(m), other.median(m)) for m in MEASURES),
            ]
            for ours in rows
            if ours.system == "ours"
            for other in rows
            if other.system != "ours"
        ],
    )


if __name__ == "__main__":
    main()
