"""The producer side of a compared system, run as ``python -m bench.produce SYSTEM``.

Sends ``--tasks`` no-op tasks in a burst from one process, as the bench's
``drive run`` does with ``enqueue``, then waits until every task has run (the
``bench:done`` set is full). Prints one JSON line.

Systems: ``stock`` (Channels' ``channel_layer.send`` from one event loop; a full
channel is retried after 1 ms), ``celery`` (``task.delay``), ``dramatiq``
(``actor.send``).
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

from bench.counters import DONE, RUNS

# The bench's own bookkeeping, left out of the per-task Redis calls.
INSTRUMENTATION = {"sadd", "incr", "incrby", "scard", "get", "info", "del", "flushall"}


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
    raise SystemExit(f"unknown system {system}")


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
    parser.add_argument("system", choices=["stock", "celery", "dramatiq"])
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    send = sender(args.system)
    # Warm-up: the workers are up and have run something; then a clean slate.
    send(range(10**9, 10**9 + args.warmup))
    wait_done(client, args.warmup, 120)
    client.delete(DONE, RUNS)
    before = commands(client)
    started = time.time()
    send(range(args.tasks))
    enqueued = time.time()
    wait_done(client, args.tasks, args.timeout)
    ended = time.time()
    after = commands(client)
    time.sleep(0.5)  # late duplicates still count
    runs = int(client.get(RUNS) or 0)
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "enqueue_s": enqueued - started,
                "total_s": ended - started,
                "duplicates": runs - args.tasks,
                "redis_per_task": {
                    k: round((v - before.get(k, 0)) / args.tasks, 2)
                    for k, v in sorted(after.items())
                    if v - before.get(k, 0) and k not in INSTRUMENTATION
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
