"""Bad configuration gives one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from project.config import ConfigError, env_bool, validate_redis_url
from project.devrun import BASE_DIR, free_port


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in env or env[k]}
    full_env.update({k: v for k, v in env.items() if v})
    for key in [k for k, v in env.items() if not v]:
        full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert words in lines[0]


def test_missing_secret_key_outside_development_mode() -> None:
    result = run(["manage.py", "check"], SECRET_KEY="", DJANGO_DEBUG="")
    assert_one_line_error(result, "SECRET_KEY is not set")


def test_development_mode_needs_no_secret_key() -> None:
    result = run(["manage.py", "check"], SECRET_KEY="", DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "http://127.0.0.1:6379",
        "redis://:6379",
        "redis://h:port",
        "redis://127.0.0.1:6379/zero",
    ],
)
def test_invalid_redis_url(url: str) -> None:
    result = run(["manage.py", "check"], REDIS_URL=url)
    assert_one_line_error(result, "REDIS_URL")


def test_invalid_redis_url_under_daphne() -> None:
    result = run(
        ["-m", "daphne", "-p", str(free_port()), "project.asgi:application"],
        REDIS_URL="nonsense",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: REDIS_URL=")
    assert "Traceback" not in result.stderr


def test_unreachable_redis_stops_a_worker_with_one_line() -> None:
    result = run(
        ["manage.py", "runworker", "realtime-ping"],
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        REDIS_CONNECT_TIMEOUT="0.5",
    )
    assert_one_line_error(result, "unreachable")


def test_bad_yes_no_value() -> None:
    result = run(["manage.py", "check"], DJANGO_DEBUG="maybe")
    assert_one_line_error(result, "DJANGO_DEBUG='maybe'")


def test_validate_redis_url_accepts_the_usual_forms() -> None:
    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://u:p@host:6380/2",
        "unix:///tmp/r.sock",
        "redis://localhost",
    ]:
        assert validate_redis_url(url) == url


def test_env_bool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "0")
    assert env_bool("FLAG", True) is False
    monkeypatch.setenv("FLAG", "2")
    with pytest.raises(ConfigError):
        env_bool("FLAG", True)


def test_channel_layer_reads_without_socket_timeout(settings) -> None:
    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    assert host["socket_timeout"] is None
    assert host["address"] == os.environ["REDIS_URL"]
