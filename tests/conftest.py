from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from channels.layers import channel_layers


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client of the session's private Redis, emptied before the test."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushall()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def fresh_channel_layers() -> Iterator[None]:
    """Give every test new channel-layer objects.

    Each async test runs on its own event loop, but a cached channels-redis layer
    keeps asyncio locks from the loop that first used it; a lock left held by a
    cancelled receive would then break a later test.
    """
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session", autouse=True)
def close_database_threads_last(django_db_setup: None) -> Iterator[None]:
    """Close the database connection of asgiref's shared thread at the end.

    ``database_sync_to_async`` outside any ``async_to_sync`` runs in one
    long-lived thread, whose connection outlives the tests (``CONN_MAX_AGE``);
    PostgreSQL then refuses to drop the test database while it is open.
    """
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()
