from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

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
def unrouted_channels() -> Iterator[Callable[[str], None]]:
    """Let tests enqueue to channels that project.asgi does not route.

    Tests enqueue to channels of their own consumers ("c", "mixin-test", the
    e2e workers' "fault-a"...), and many replace ``RETRYING_CONSUMERS`` whole,
    which would turn ``CHECK_ROUTES`` back on: so the check itself is switched
    off here. Yields the real check, for the tests of it.
    """
    from retrying_consumers import producer

    real = producer.check_route
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(producer, "check_route", lambda channel: None)
        yield real


@pytest.fixture(scope="session", autouse=True)
def end_leftover_database_sessions(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[None]:
    """End the sessions other threads left open on PostgreSQL's test database,
    which it refuses to drop while any is open.

    ``database_sync_to_async`` outside any ``async_to_sync`` runs in one
    long-lived thread, whose connection outlives the tests (``CONN_MAX_AGE``);
    threads that tests start end without closing theirs.
    """
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
