"""One channel-layer listener per server process for live task events.

A ``group_send`` puts one copy of a message in Redis for every member channel,
and daphne takes each copy with its own round trip: a thousand browsers
watching one task would cost a thousand messages per update, and daphne would
fall behind. Instead, a process's :class:`Hub` is the only member of each group
that one or more of its websockets watch. It takes one copy and hands it to
every local websocket that watches that group, in memory.

Events name the group they were sent to (``"group"``); a message without one
goes to every local listener, which filters it as before. A ``session.ended``
message (a logout, see realtime/access.py) goes to the listeners'
``session_ended``, every other one to their ``task_updates``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

logger = logging.getLogger("realtime.hub")

MAX_BACKOFF = 5.0


#: The one message type that is not a task event: a user's session ended
#: (see realtime/access.py); it goes to ``session_ended``.
SESSION_ENDED = "session.ended"


class Listener(Protocol):
    async def task_updates(self, event: dict[str, Any]) -> None: ...

    async def session_ended(self, event: dict[str, Any]) -> None: ...


class Hub:
    """The group memberships of one process, shared by its websockets."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.members: dict[str, set[Listener]] = {}
        self.channel: str | None = None
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    async def join(self, group: str, listener: Listener) -> None:
        """Make ``listener`` hear ``group``'s events."""
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self.reader is None or self.reader.done():
                self.reader = asyncio.create_task(self._read(self.channel))
            # Added again on every join: it renews the membership, which the
            # channel layer would otherwise expire after its group_expiry.
            await self.layer.group_add(group, self.channel)
            self.members.setdefault(group, set()).add(listener)

    async def leave(self, group: str, listener: Listener) -> None:
        """Stop ``listener`` hearing ``group``; the last one out leaves it."""
        async with self.lock:
            members = self.members.get(group)
            if members is None or listener not in members:
                return
            members.discard(listener)
            if not members:
                del self.members[group]
                await self.layer.group_discard(group, self.channel)

    async def _read(self, channel: str) -> None:
        backoff = 0.1
        lost_at: float | None = None  # when the current outage began
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # Once per outage; the retries every few seconds go to DEBUG.
                log = logger.warning if lost_at is None else logger.debug
                log("hub lost the channel layer, retrying in %.1f s: %s", backoff, err)
                if lost_at is None:
                    lost_at = loop.time()
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            if lost_at is not None:
                logger.warning(
                    "hub reached the channel layer again after %.1f s",
                    loop.time() - lost_at,
                )
                lost_at = None
            backoff = 0.1
            await self._hand_out(message)

    async def _hand_out(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        group = message.get("group")
        if isinstance(group, str):
            listeners = set(self.members.get(group, ()))
        else:
            listeners = set().union(*self.members.values()) if self.members else set()
        for listener in listeners:
            try:
                if message.get("type") == SESSION_ENDED:
                    await listener.session_ended(message)
                else:
                    await listener.task_updates(message)
            except Exception:
                logger.exception("a websocket could not take a task event")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub_for(layer: Any) -> Hub:
    """The running loop's hub on ``layer``."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    found = hubs.get(id(layer))
    if found is None or found.layer is not layer:
        found = hubs[id(layer)] = Hub(layer)
    return found
