"""``stats`` frames computed once per process and handed to every socket.

Each websocket subscribed to a scope used to run its own stats queries every
2 s: one user's 500 open tabs cost 500 query sets every 2 s, and daphne fell
behind on everyone's handshakes. Here a process computes each distinct view
once per interval and sends the same frame to every socket that shows it:
"all" is one view for the whole process (everyone allowed to see it sees the
same thing), "mine" is one view per user. A socket asks with a key from
:func:`stats_key`; how the stats are computed is :func:`realtime.queries.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.db import database_sync_to_async

logger = logging.getLogger("realtime.stats")

STATS_INTERVAL = 2.0  # at least this often while anyone watches a view
STATS_MIN_INTERVAL = 0.5  # at most this often, however busy

StatsKey = tuple[str, int | None]


class StatsListener(Protocol):
    async def send_stats(self, frame: str) -> None: ...


def stats_key(scope: str, user: Any) -> StatsKey:
    """The view a socket of ``user`` subscribed to ``scope`` shows."""
    return ("all", None) if scope == "all" else ("mine", int(user.pk))


@dataclass(eq=False)
class _View:
    user: Any  # whose view is computed ("all": any of its watchers)
    scope: str
    listeners: set[StatsListener] = field(default_factory=set)
    due: asyncio.Event = field(default_factory=asyncio.Event)
    frame: str | None = None
    job: asyncio.Task[None] | None = None


class StatsFeed:
    """The stats views of one process and the sockets that watch them."""

    def __init__(self, compute: Callable[[Any, str], dict[str, Any]]) -> None:
        self.compute = compute
        self.views: dict[StatsKey, _View] = {}

    async def watch(self, key: StatsKey, user: Any, listener: StatsListener) -> None:
        """Send ``listener`` the view ``key`` from now on (and the last frame
        at once, if there is one)."""
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = _View(user=user, scope=key[0])
        view.listeners.add(listener)
        if view.job is None or view.job.done():
            view.job = asyncio.create_task(self._run(key, view))
        elif view.frame is not None:
            await self._send(listener, view.frame)

    def unwatch(self, key: StatsKey, listener: StatsListener) -> None:
        """Stop sending ``key`` to ``listener``; the last one out stops it."""
        view = self.views.get(key)
        if view is None:
            return
        view.listeners.discard(listener)
        if not view.listeners:
            del self.views[key]
            if view.job is not None:
                view.job.cancel()

    def poke(self, key: StatsKey) -> None:
        """Something changed: compute ``key`` again soon (at most every
        ``STATS_MIN_INTERVAL``)."""
        view = self.views.get(key)
        if view is not None:
            view.due.set()

    async def _run(self, key: StatsKey, view: _View) -> None:
        compute = database_sync_to_async(self.compute)
        while view.listeners:
            try:
                stats = await compute(view.user, view.scope)
            except Exception:
                logger.exception("stats could not be computed: view=%s", key[0])
            else:
                view.frame = json.dumps({"type": "stats", "scope": view.scope, **stats})
                view.due.clear()
                for listener in list(view.listeners):
                    await self._send(listener, view.frame)
            await asyncio.sleep(STATS_MIN_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(view.due.wait(), STATS_INTERVAL)

    @staticmethod
    async def _send(listener: StatsListener, frame: str) -> None:
        try:
            await listener.send_stats(frame)
        except Exception:
            logger.exception("a websocket could not take a stats frame")


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StatsFeed] = (
    weakref.WeakKeyDictionary()
)


def feed_for(compute: Callable[[Any, str], dict[str, Any]]) -> StatsFeed:
    """The running loop's stats feed (one per server process)."""
    loop = asyncio.get_running_loop()
    found = _feeds.get(loop)
    if found is None or found.compute is not compute:
        found = _feeds[loop] = StatsFeed(compute)
    return found
