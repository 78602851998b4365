"""Dramatiq on the bench's Redis: one no-op actor, the default middleware.

Run by ``dramatiq bench.dramatiq_app --processes 2 --threads 1``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.counters import mark_done

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="bench", max_retries=0)
def noop(n: int) -> None:
    mark_done(n)
