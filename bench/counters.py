"""How compared systems report a finished task: one Redis round trip per task.

``bench:done`` is the set of task numbers that ran (completion: its size reaches
the number sent); ``bench:runs`` counts executions, so duplicates show.
"""

from __future__ import annotations

import os
from typing import Any

DONE = "bench:done"
RUNS = "bench:runs"

_client: Any = None
_pid = 0


def _redis() -> Any:
    global _client, _pid
    # One client per process: prefork pools fork after import.
    if _client is None or _pid != os.getpid():
        import redis

        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        _pid = os.getpid()
    return _client


def mark_done(number: int) -> None:
    """Record that task ``number`` ran (synchronous workers)."""
    pipe = _redis().pipeline(transaction=False)
    pipe.sadd(DONE, number)
    pipe.incr(RUNS)
    pipe.execute()


class AsyncMarker:
    """The same for an asyncio worker, one client per event loop."""

    def __init__(self) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"])

    async def mark_done(self, number: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(DONE, number)
        pipe.incr(RUNS)
        await pipe.execute()
