"""Ready-made consumers with retries, for subclassing."""

from channels.consumer import AsyncConsumer, SyncConsumer
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

from .mixin import RetryMixin


class RetryingAsyncConsumer(RetryMixin, AsyncConsumer):
    """An ``AsyncConsumer`` whose handlers run as retried tasks."""


class RetryingSyncConsumer(RetryMixin, SyncConsumer):
    """A ``SyncConsumer`` whose handlers run as retried tasks (in one thread)."""


class RetryingWebsocketConsumer(RetryMixin, WebsocketConsumer):
    """A ``WebsocketConsumer`` with in-place retries and error frames."""


class RetryingAsyncWebsocketConsumer(RetryMixin, AsyncWebsocketConsumer):
    """An ``AsyncWebsocketConsumer`` with in-place retries and error frames."""


class RetryingJsonWebsocketConsumer(RetryMixin, JsonWebsocketConsumer):
    """A ``JsonWebsocketConsumer`` with in-place retries and error frames."""


class RetryingAsyncJsonWebsocketConsumer(RetryMixin, AsyncJsonWebsocketConsumer):
    """An ``AsyncJsonWebsocketConsumer`` with in-place retries and error frames."""
