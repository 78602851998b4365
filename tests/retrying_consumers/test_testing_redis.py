"""retrying_consumers.testing.redis: a private redis-server, started and stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from retrying_consumers.testing.redis import PrivateRedis


def test_a_private_redis_answers_and_is_gone_after_stop() -> None:
    server = PrivateRedis.start()
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
    finally:
        client.close()
        server.stop()
    assert server.process.poll() is not None
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()


def test_no_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrying_consumers.testing import redis as module

    monkeypatch.setattr(module, "find_redis_server", lambda: None)
    with pytest.raises(RuntimeError, match="no redis-server on PATH"):
        PrivateRedis.start()


def test_its_files_are_removed() -> None:
    server = PrivateRedis.start()
    workdir = server._workdir
    assert workdir is not None and Path(workdir.name).is_dir()
    server.stop()
    assert not Path(workdir.name).exists()
