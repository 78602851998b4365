"""Stock Channels: Channels' own ``Worker`` running a plain consumer.

``python -m bench.stock_worker`` does what Channels' ``manage.py runworker bench``
does (this project's ``runworker`` replaces it): the same ``channels.worker.Worker``
on the same channel layer, with no retry layer and no store. The consumer only
records that the message ran (``bench.counters``).
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from channels.consumer import AsyncConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ChannelNameRouter  # noqa: E402
from channels.worker import Worker  # noqa: E402

from bench.counters import AsyncMarker  # noqa: E402

CHANNEL = "bench-stock"


class StockConsumer(AsyncConsumer):
    """A plain consumer: at-most-once, no state."""

    marker: AsyncMarker | None = None

    async def bench_noop(self, message: dict[str, Any]) -> None:
        marker = self.marker
        if marker is None:
            marker = type(self).marker = AsyncMarker()
        await marker.mark_done(message["n"])


application = ChannelNameRouter({CHANNEL: StockConsumer.as_asgi()})


def main() -> None:
    Worker(
        application=application, channels=[CHANNEL], channel_layer=get_channel_layer()
    ).run()


if __name__ == "__main__":
    main()
