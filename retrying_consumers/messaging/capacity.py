"""How full a worker channel is, as far as rings are concerned.

Rings leave a tenth of a channel's capacity (``HEADROOM``) to the rings that
workers send back. A channel found full is left alone for a pause that doubles
while it stays full (:class:`FullChannels`). Only channels-redis's layer can
say how many messages a channel holds (:func:`spare_messages`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Seconds a channel found full is left alone at first; the pause doubles each
#: time it is found full again, up to ``FULL_PAUSE_MAX``.
FULL_PAUSE_MIN = 0.02
FULL_PAUSE_MAX = 0.5
#: Share of a channel's capacity that rings leave free, but for those that
#: workers send back (:func:`aring_again`): a worker that took a batch of more
#: rings than it can run sends the rest back, and a channel filled to the brim
#: would refuse them.
HEADROOM = 0.1


@dataclass
class FullChannels:
    """The channels of one channel layer found full lately, and for how long
    each is left alone: ``FULL_PAUSE_MIN`` at first, doubled each time it is
    found full again, up to ``FULL_PAUSE_MAX``; forgotten once a ring goes in.
    """

    clock: Callable[[], float] = time.monotonic
    #: channel -> (left alone until, length of that pause)
    pauses: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paused(self, channel: str) -> bool:
        """Whether ``channel`` was found full and is still left alone."""
        with self.lock:
            found = self.pauses.get(channel)
        return found is not None and self.clock() < found[0]

    def found_full(self, channel: str) -> float:
        """Note that ``channel`` is full; return how long it is left alone."""
        with self.lock:
            found = self.pauses.get(channel)
            pause = FULL_PAUSE_MIN if found is None else found[1] * 2
            pause = min(pause, FULL_PAUSE_MAX)
            self.pauses[channel] = (self.clock() + pause, pause)
        return pause

    def found_room(self, channel: str) -> None:
        """Note that ``channel`` took a message: no pause next time it is full."""
        with self.lock:
            self.pauses.pop(channel, None)


_full_channels: weakref.WeakKeyDictionary[Any, FullChannels] = (
    weakref.WeakKeyDictionary()
)
_full_channels_lock = threading.Lock()


def full_channels(layer: Any) -> FullChannels:
    """The :class:`FullChannels` of ``layer`` (one per layer object)."""
    with _full_channels_lock:
        found = _full_channels.get(layer)
        if found is None:
            found = _full_channels[layer] = FullChannels()
        return found


async def spare_messages(layer: Any, channel: str) -> int | None:
    """Messages of rings ``channel`` takes now; None if the layer cannot tell.

    Its capacity less what it holds and less ``HEADROOM``, kept free for the
    rings that workers send back (:func:`.doorbell.aring_again`). Only channels-redis's
    layer can tell: one ``ZCOUNT`` per host.
    """
    if not counts_messages(layer):
        return None
    capacity = layer.get_capacity(channel)
    usable = capacity - int(capacity * HEADROOM)
    key = layer.prefix + channel
    spare = 0
    for index in range(layer.ring_size):
        held = await layer.connection(index).zcount(key, "-inf", "+inf")
        spare += max(0, usable - int(held))
    return spare


def counts_messages(layer: Any) -> bool:
    from channels_redis.core import RedisChannelLayer

    return isinstance(layer, RedisChannelLayer)
