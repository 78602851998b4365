"""Garbage-collector tuning for a daphne that holds many websockets.

A daphne fanning progress out to a thousand sockets allocates a great deal, and
every full collection of CPython's cyclic garbage collector walks every tracked
object in the process: Django, Channels and the apps loaded at start-up, and
every socket's consumer, scope and tasks. Those full passes found almost no
garbage and were most of the tail latency of progress to 1,000 watchers
(``docs/benchmarks.md``).
"""

from __future__ import annotations

import gc

#: Allocations between two collections of the youngest generation (CPython's
#: default is 700). Each socket's batch keeps a coroutine, a task and a future
#: alive for up to a flush interval; collected every 700 allocations, they were
#: caught alive, promoted, and grew the oldest generation until a full pass ran.
YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Freeze the start-up heap and collect the young generation less often.

    Call it once at the end of the ASGI module, after the application is built
    (as ``project/asgi.py`` does). The collection before the freeze takes out
    what start-up left behind; every object alive then is never walked again.
    Objects created later are collected as usual, in fewer, larger young passes
    (a threshold already set higher is kept).
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
