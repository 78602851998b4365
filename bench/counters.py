"""How compared systems report a finished task: one Redis round trip per task.

``bench:done`` is the set of task numbers that ran (completion: its size reaches
the number sent); ``bench:runs`` counts executions, so duplicates show;
``bench:first`` and ``bench:last`` hold the wall-clock time of the first and the
latest finish (for a drain's time from first to last task). All four go in one
pipelined round trip.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

DONE = "bench:done"
RUNS = "bench:runs"
FIRST = "bench:first"
LAST = "bench:last"
KEYS = (DONE, RUNS, FIRST, LAST)

_client: Any = None
_pid = 0
_lock = threading.Lock()


def _redis() -> Any:
    global _client, _pid
    # One client per process: prefork pools fork after import. Threaded workers
    # (Dramatiq's 8 threads) must not race to replace it: a dropped client
    # closes its connections under the thread still using them.
    with _lock:
        if _client is None or _pid != os.getpid():
            import redis

            _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
            _pid = os.getpid()
        return _client


def mark_done(number: int) -> None:
    """Record that task ``number`` ran (synchronous workers)."""
    _record(_redis().pipeline(transaction=False), number).execute()


class AsyncMarker:
    """The same for an asyncio worker, one client per event loop."""

    def __init__(self) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"])

    async def mark_done(self, number: int) -> None:
        await _record(self.client.pipeline(transaction=False), number).execute()


def _record(pipe: Any, number: int) -> Any:
    now = time.time()
    pipe.sadd(DONE, number)
    pipe.incr(RUNS)
    pipe.set(FIRST, now, nx=True)
    pipe.set(LAST, now)
    return pipe
