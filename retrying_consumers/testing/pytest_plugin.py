"""Pytest fixtures for projects that use retrying_consumers; opt in with

``pytest -p retrying_consumers.testing.pytest_plugin``, or in a conftest.py::

    pytest_plugins = ["retrying_consumers.testing.pytest_plugin"]

Fixtures:

``private_redis`` (session)
    A memory-only ``redis-server`` of the session's own on a free port (see
    :class:`~retrying_consumers.testing.redis.PrivateRedis`), with
    ``CHANNEL_LAYERS`` pointed at it through channels-redis until the session
    ends. Yields the server (``.url``, ``.port``).
``task_worker``
    ``task_worker(*channels)`` starts a real ``RetryingWorker`` for
    ``channels`` in a thread (a :class:`.threaded.ThreadedWorker`), on the
    test database and the configured layer (use ``private_redis``); it is
    stopped gracefully after the test.
``drain``
    :func:`~retrying_consumers.testing.draining.drain`: run every unfinished
    task to its end at once, or fail naming the tasks left after ``timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .redis import PrivateRedis


def redis_channel_layers(url: str) -> dict[str, Any]:
    """``CHANNEL_LAYERS`` for channels-redis at ``url``."""
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Blocking reads must not time out (redis-py 8's 5 s default races
            # channels-redis's 5 s BZPOPMIN).
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": None}]},
        }
    }


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    """A private redis-server, and ``CHANNEL_LAYERS`` pointed at it."""
    from django.test import override_settings

    server = PrivateRedis.start()
    layers = override_settings(CHANNEL_LAYERS=redis_channel_layers(server.url))
    layers.enable()
    try:
        yield server
    finally:
        layers.disable()
        server.stop()


@pytest.fixture
def task_worker() -> Iterator[Callable[..., Any]]:
    """``task_worker(*channels)``: a started worker, stopped after the test."""
    from .threaded import ThreadedWorker

    started: list[ThreadedWorker] = []

    def start(*channels: str) -> ThreadedWorker:
        worker = ThreadedWorker(channels).start()
        started.append(worker)
        return worker

    yield start
    for worker in reversed(started):
        worker.stop()


@pytest.fixture
def drain() -> Callable[..., int]:
    """``drain(timeout=10.0)``: run every unfinished task until none is left."""
    from .draining import drain

    return drain
