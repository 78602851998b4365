"""Process tuning for a daphne that holds many websockets.

A daphne process fanning progress out to a thousand sockets allocates a great
deal, so CPython's cyclic garbage collector runs often, and every full
collection walks every tracked object in the process: Django, Channels, the
apps, their modules and classes, most of which live until the process exits.
Those full collections were most of the tail latency of progress to 1,000
watchers (``docs/benchmarks.md``).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the collector's sight.

    Call it at the end of the ASGI module, after the application is built (as
    ``project/asgi.py`` does). Frozen objects are never collected or walked
    again; objects created later (connections, messages) are collected as
    usual. Nothing is freed by it, and nothing that is garbage is frozen: the
    collection before it takes out what start-up left behind.
    """
    gc.collect()
    gc.freeze()
