"""Producer throughput: ``enqueue`` one call at a time, ``enqueue_many``, and
``aenqueue`` from 50 coroutines of one event loop at once.

``python -m bench.enqueue_many --runs 3 --tasks 10000 --postgres URL`` stores
``--tasks`` no-op tasks from one process, with no worker running, once per mode
and run, into SQLite and (with ``--postgres``) PostgreSQL, and prints tasks/s
(median [min-max]). A run's time ends when the last ring has reached Redis
(``doorbell.flush``), not when the last call returns. The channel's capacity
is set high enough that no ring is refused.

Each run is a child process (``--measure MODE``), the role this same module
plays: it empties the store, warms up with one task, then times the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from bench.common import Bench, Database, Series, common_args, print_table, run_module

MODES = ("enqueue", "enqueue_many", "aenqueue")
#: Coroutines of one event loop calling ``aenqueue`` at once in "aenqueue"
#: mode, as the requests of one ASGI process do.
CONCURRENT = 50
CHANNEL = "bench"  # routed by bench.app: enqueue checks its routes
TYPE = "bench.noop"
#: Messages the channel holds: every ring of a run, 50 to a message or alone.
CAPACITY = 1_000_000


def measure(mode: str, tasks: int, batch: int) -> dict[str, Any]:
    """Time ``tasks`` tasks stored by ``mode`` (in the bench's Django process)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    from retrying_consumers import enqueue, enqueue_many
    from retrying_consumers.messaging import doorbell
    from retrying_consumers.models import AttemptRecord, TaskRecord

    AttemptRecord.objects.all().delete()
    TaskRecord.objects.all().delete()
    enqueue(CHANNEL, TYPE, {"n": -1})  # connections, statements, ring loop
    assert doorbell.flush(60)
    started = time.perf_counter()
    if mode == "enqueue":
        for n in range(tasks):
            enqueue(CHANNEL, TYPE, {"n": n})
    elif mode == "aenqueue":
        asyncio.run(_concurrent_aenqueue(tasks))
    else:
        for start in range(0, tasks, batch):
            end = min(start + batch, tasks)
            enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(start, end)])
    stored = time.perf_counter() - started
    assert doorbell.flush(120), "rings still unsent after 120 s"
    seconds = time.perf_counter() - started
    assert TaskRecord.objects.count() == tasks + 1
    return {"seconds": seconds, "stored_s": stored, "tasks_per_s": tasks / seconds}


async def _concurrent_aenqueue(tasks: int) -> None:
    from retrying_consumers import aenqueue

    numbers = iter(range(tasks))

    async def caller() -> None:
        for n in numbers:  # shared: each number is taken once
            await aenqueue(CHANNEL, TYPE, {"n": n})

    await asyncio.gather(*(caller() for _ in range(CONCURRENT)))


def run_rows(bench: Bench, db: Database, args: argparse.Namespace) -> list[list[str]]:
    """One table row per mode on ``db``: median tasks/s of ``args.runs`` runs."""
    env = bench.env(db)
    rows = []
    sizes = ["--tasks", str(args.tasks), "--batch", str(args.batch)]
    for mode in MODES:
        rate, seconds = Series(), Series()
        for _ in range(args.runs):
            bench.flush_redis()
            answer = run_module(
                "bench.enqueue_many",
                env,
                ["--measure", mode, *sizes],
                args.timeout,
                bench.logs,
            )
            rate.add(answer["tasks_per_s"])
            seconds.add(answer["seconds"])
        batch = {
            "enqueue": "1",
            "aenqueue": f"1, {CONCURRENT} at once",
        }.get(mode, f"{args.batch:,}")
        rows.append(
            [db.label, mode, batch, seconds.cell("{:.2f}"), rate.cell("{:.0f}")]
        )
    return rows


def main() -> None:
    parser = common_args(
        argparse.ArgumentParser(description=__doc__.split("\n")[0]), tasks=10_000
    )
    parser.add_argument("--batch", type=int, default=1000, help="tasks per call")
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.tasks, args.batch)), flush=True)
        return
    with Bench(capacity=CAPACITY, keep=args.keep_logs) as bench:
        rows = []
        for db in bench.databases(args.postgres, sqlite=not args.no_sqlite):
            rows += run_rows(bench, db, args)
    print_table(
        f"{args.tasks:,} tasks from one process, no workers, "
        f"median [min-max] of {args.runs} runs",
        ["store", "call", "tasks per call", "seconds", "tasks/s"],
        rows,
    )


if __name__ == "__main__":
    main()
