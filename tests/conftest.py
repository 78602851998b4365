from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client of the session's private Redis, emptied before the test."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushall()
    yield client
    client.close()
