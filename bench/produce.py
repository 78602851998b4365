"""The producer side of a compared system, run as ``python -m bench.produce SYSTEM``.

``--mode e2e`` (the workers run): warm up, then send ``--tasks`` no-op tasks in
a burst from one process, as the bench's ``drive run`` does with ``enqueue``,
and wait until every task has run (the ``bench:done`` set is full).
``--mode enqueue`` (no worker runs): send them, one call at a time, and time
the calls alone. ``--mode wait``: wait until they have all run; the drain time
runs from the first task's finish to the last's. Prints one JSON line.

Systems: ``stock`` (Channels' ``channel_layer.send`` from one event loop; a full
channel is retried after 1 ms), ``celery`` (``task.delay``), ``dramatiq``
(``actor.send``), ``django-tasks-db`` (Django's ``task.enqueue``, one INSERT
committed per call) and ``procrastinate`` (``task.defer``, the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.counters import DONE, FIRST, KEYS, LAST, RUNS

SYSTEMS = ["stock", "celery", "dramatiq", "django-tasks-db", "procrastinate"]

# The bench's own bookkeeping, left out of the per-task Redis calls.
INSTRUMENTATION = {
    "sadd",
    "incr",
    "incrby",
    "scard",
    "get",
    "set",
    "info",
    "del",
    "flushall",
}


def sender(system: str) -> Callable[[range], None]:
    if system == "stock":
        return _stock_sender()
    if system == "celery":
        from bench.celery_app import noop

        def send_celery(numbers: range) -> None:
            for n in numbers:
                noop.delay(n)

        return send_celery
    if system == "dramatiq":
        from bench.dramatiq_app import noop as actor

        def send_dramatiq(numbers: range) -> None:
            for n in numbers:
                actor.send(n)

        return send_dramatiq
    if system in ("django-tasks-db", "procrastinate"):
        return _django_sender(system)
    raise SystemExit(f"unknown system {system}")


def _django_sender(system: str) -> Callable[[range], None]:
    """A durable peer's producer: one committed INSERT per call, as from a view."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peer_settings")
    django.setup()
    from bench.peer_tasks import noop, procrastinate_noop

    if system == "django-tasks-db":

        def send_tasks_db(numbers: range) -> None:
            for n in numbers:
                noop.enqueue(n)

        return send_tasks_db

    def send_procrastinate(numbers: range) -> None:
        for n in numbers:
            procrastinate_noop.defer(n=n)

    return send_procrastinate


def peer_table(system: str) -> str | None:
    """A durable peer's task table; None for the others."""
    if system not in ("django-tasks-db", "procrastinate"):
        return None
    from django_tasks_db.models import DBTaskResult

    return {
        "django-tasks-db": DBTaskResult._meta.db_table,
        "procrastinate": "procrastinate_jobs",
    }[system]


def reset_tables(system: str) -> None:
    """Empty a durable peer's task table (the store's own reset, for peers).

    No ANALYZE of the empty table: its statistics would tell the planner the
    queue is empty for the whole run (procrastinate's fetch then ran about one
    job a second with 10,000 queued). Unanalyzed, the planner looks at the
    table's real size, as it would in production, where autovacuum's ANALYZE
    keeps up with a queue.
    """
    _on_peer_table(system, "TRUNCATE {} CASCADE")


def analyze_tables(system: str) -> None:
    """After a backlog went in: what autovacuum does within its first minute."""
    _on_peer_table(system, "ANALYZE {}")


def _on_peer_table(system: str, statement: str) -> None:
    table = peer_table(system)
    if table is None:
        return
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement.format(table))


def _stock_sender() -> Callable[[range], None]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    from channels.exceptions import ChannelFull
    from channels.layers import get_channel_layer

    from bench.stock_worker import CHANNEL

    layer = get_channel_layer()
    loop = asyncio.new_event_loop()

    async def send_all(numbers: range) -> None:
        for n in numbers:
            while True:
                try:
                    await layer.send(CHANNEL, {"type": "bench.noop", "n": n})
                    break
                except ChannelFull:
                    await asyncio.sleep(0.001)

    return lambda numbers: loop.run_until_complete(send_all(numbers))


def wait_done(client: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.scard(DONE) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {client.scard(DONE)} of {count} ran")
        time.sleep(0.002)


def commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.produce")
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--mode", choices=["e2e", "enqueue", "wait"], default="e2e")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    if args.mode == "wait":
        answer = wait_drained(client, args.tasks, args.timeout)
    else:
        send = sender(args.system)
        reset_tables(args.system)
        if args.mode == "enqueue":
            answer = enqueue_alone(client, send, args.tasks)
            analyze_tables(args.system)
        else:
            answer = end_to_end(client, send, args)
    print(json.dumps(answer), flush=True)


def enqueue_alone(client: Any, send: Callable[[range], None], tasks: int) -> Any:
    """Send ``tasks`` tasks with no worker running; the calls' time alone."""
    client.delete(*KEYS)
    started = time.perf_counter()
    send(range(tasks))
    return {"tasks": tasks, "enqueue_s": time.perf_counter() - started}


def wait_drained(client: Any, tasks: int, timeout: float) -> Any:
    """Wait for a backlog to run; its time from the first finish to the last."""
    wait_done(client, tasks, timeout)
    time.sleep(0.5)  # late duplicates still count
    first, last = (float(client.get(key)) for key in (FIRST, LAST))
    return {
        "tasks": tasks,
        "total_s": last - first,
        "duplicates": int(client.get(RUNS) or 0) - tasks,
    }


def end_to_end(
    client: Any, send: Callable[[range], None], args: argparse.Namespace
) -> Any:
    # Warm-up: the workers are up and have run something; then a clean slate.
    send(range(10**9, 10**9 + args.warmup))
    wait_done(client, args.warmup, 120)
    client.delete(*KEYS)
    before = commands(client)
    started = time.time()
    send(range(args.tasks))
    enqueued = time.time()
    wait_done(client, args.tasks, args.timeout)
    after = commands(client)
    time.sleep(0.5)  # late duplicates still count
    runs = int(client.get(RUNS) or 0)
    return {
        "tasks": args.tasks,
        "enqueue_s": enqueued - started,
        "total_s": float(client.get(LAST)) - started,
        "duplicates": runs - args.tasks,
        "redis_per_task": {
            k: round((v - before.get(k, 0)) / args.tasks, 2)
            for k, v in sorted(after.items())
            if v - before.get(k, 0) and k not in INSTRUMENTATION
        },
    }


if __name__ == "__main__":
    main()
