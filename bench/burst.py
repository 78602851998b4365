"""The Django side of the overload scenario, run as ``python -m bench.burst``.

Waits for the workers, warms them up, enqueues ``--tasks`` no-op tasks as fast
as one process can, waits until every one has succeeded, and prints one JSON
line (as ``bench.drive run`` does).

Producers:

``atomic``   every ``enqueue`` in one transaction: the rings leave together at
             the commit, far faster than workers take them (a bulk job, a data
             migration, an import)
``enqueue``  one ``enqueue`` after another, each its own transaction: the rings
             leave while the next tasks are written
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from django.db import transaction

from bench.drive import (
    CHANNEL,
    attempts_beyond_one,
    last_finished,
    per_task,
    produce,
    redis_commands,
    wait_all,
    wait_for_workers,
)
from retrying_consumers import enqueue
from retrying_consumers.models import Status, TaskRecord

WARMUP = 20


def burst(producer: str, count: int) -> list[Any]:
    """Enqueue ``count`` no-op tasks; return their ids."""
    if producer == "enqueue":
        return produce("bench.noop", count, {}, "enqueue", 0)[0]
    with transaction.atomic():
        return [enqueue(CHANNEL, "bench.noop") for _ in range(count)]


def succeeded() -> int:
    return TaskRecord.objects.filter(status=Status.SUCCEEDED).count()


def run(args: argparse.Namespace) -> dict[str, Any]:
    wait_for_workers(args.workers, 60)
    before = succeeded()
    burst("enqueue", WARMUP)
    wait_all(before, WARMUP, 60)
    before = succeeded()
    redis_before = redis_commands()
    started = time.time()
    ids = burst(args.producer, args.tasks)
    enqueued = time.time()
    wait_all(before, args.tasks, args.timeout)
    return {
        "tasks": args.tasks,
        "enqueue_s": enqueued - started,
        "total_s": last_finished(ids) - started,
        "redis_per_task": per_task(redis_before, redis_commands(), args.tasks),
        "duplicates": attempts_beyond_one(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.burst")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--producer", choices=["atomic", "enqueue"], default="atomic")
    parser.add_argument("--timeout", type=float, default=900)
    print(json.dumps(run(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
