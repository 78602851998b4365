"""A ProtocolTypeRouter with plain, retrying and wrapped worker consumers."""

from __future__ import annotations

from channels.consumer import AsyncConsumer
from channels.middleware import BaseMiddleware
from channels.routing import ChannelNameRouter, ProtocolTypeRouter

from retrying_consumers import RetryingAsyncConsumer
from retrying_consumers.startup import check_database

# An asgi.py may check its database at import; the checks must not run it.
check_database()


class PlainConsumer(AsyncConsumer):
    """No RetryMixin: the check warns."""


class RetryingConsumer(RetryingAsyncConsumer):
    """RetryMixin: the check is quiet."""


application = ProtocolTypeRouter(
    {
        "channel": ChannelNameRouter(
            {
                "plain": PlainConsumer.as_asgi(),
                "retrying": RetryingConsumer.as_asgi(),
                "wrapped": BaseMiddleware(PlainConsumer.as_asgi()),
                "wrapped-retrying": BaseMiddleware(RetryingConsumer.as_asgi()),
            }
        )
    }
)

#: Websockets only: no worker channel, nothing to check.
no_channels = ProtocolTypeRouter({"websocket": PlainConsumer.as_asgi()})
