"""What a worker reads from the project's channel routes, by channel.

The routes are the ``channel`` part of the ASGI application's
``ProtocolTypeRouter`` (a ``ChannelNameRouter``): each channel's consumer class
says how many of its attempts run at once, whether it retries, and how long its
results are kept.
"""

from __future__ import annotations

from typing import Any

from ..models import TaskRecord
from ..storage.retention import ResultExpiry, result_expiries

Routes = dict[str, Any] | None


def channel_routes(application: Any) -> Routes:
    """The channel -> application mapping of the project's ChannelNameRouter."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict) and "channel" in mapping:
        mapping = getattr(mapping["channel"], "application_mapping", None)
    return mapping if isinstance(mapping, dict) else None


def channel_limit(routes: Routes, channel: str, concurrency: int) -> int:
    """Attempts of ``channel`` a process of ``concurrency`` slots runs at once.

    A consumer's ``worker_concurrency`` if it sets one; else 1 for sync
    consumers (all of them share one thread, so more would only be
    prefetch), and the process's ``concurrency`` for async ones.
    """
    app = (routes or {}).get(channel)
    consumer_class = getattr(app, "consumer_class", None)
    limit = getattr(consumer_class, "worker_concurrency", None)
    if limit is None:
        limit = 1 if getattr(consumer_class, "_sync", False) else None
    return min(limit or concurrency, concurrency)


def retrying_channels(routes: Routes, channels: list[str]) -> list[str]:
    """The ``channels`` whose consumer is a RetryMixin one."""
    found = routes or {}
    return [
        channel
        for channel in channels
        if hasattr(getattr(found.get(channel), "consumer_class", None), "decide_retry")
    ]


def channels_result_expiries(routes: Routes, channels: list[str]) -> list[ResultExpiry]:
    """The ``result_expires`` of the consumers of ``channels``."""
    found = routes or {}
    return [
        expiry
        for channel in channels
        for expiry in result_expiries(
            channel, getattr(found.get(channel), "consumer_class", None)
        )
    ]


def consumer_for(routes: Routes, task: TaskRecord) -> Any:
    """A new instance of the consumer of ``task``'s channel, or None."""
    app = (routes or {}).get(task.channel)
    consumer_class = getattr(app, "consumer_class", None)
    if consumer_class is None:
        return None
    return consumer_class(**getattr(app, "consumer_initkwargs", {}))
