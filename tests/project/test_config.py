"""Bad configuration gives one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os

import pytest

from project.config import (
    ConfigError,
    check_database,
    database_problem,
    env_bool,
    env_int,
    env_number,
    validate_redis_url,
)
from project.devrun import free_port
from tests.processes import database_url
from tests.project.entrypoints import assert_one_line_error, run


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
    assert_one_line_error(result, "REDIS_URL=")


@pytest.mark.django_db(transaction=True)  # migrated: the worker gets to Redis
def test_unreachable_redis_stops_a_worker_with_one_line() -> None:
    result = run(
        ["manage.py", "runworker", "realtime-ping"],
        DATABASE_URL=database_url(),
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        REDIS_CONNECT_TIMEOUT="0.5",
    )
    assert_one_line_error(result, "unreachable")


@pytest.mark.django_db(transaction=True)  # migrated: the worker gets to Redis
def test_a_channel_layer_that_cannot_work_stops_a_worker_with_one_line() -> None:
    # Redis answers; only the connection settings the layer builds from are bad.
    # (Not socket_timeout: in the URL it overrides None, which a system check
    # refuses before the worker starts.)
    result = run(
        ["manage.py", "runworker", "realtime-ping"],
        DATABASE_URL=database_url(),
        REDIS_URL=f"{os.environ['REDIS_URL']}?socket_connect_timeout=abc",
    )
    assert_one_line_error(result, "CHANNEL_LAYERS: host 0 cannot be used")
    assert "socket_connect_timeout" in result.stderr


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


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_numbers_from_the_environment_are_finite(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_NUMBER", raw)
    with pytest.raises(ConfigError, match=r"SOME_NUMBER=.* expected a number"):
        env_number("SOME_NUMBER", 1)
    with pytest.raises(ConfigError, match=r"SOME_NUMBER=.* expected a whole number"):
        env_int("SOME_NUMBER", 1)


def test_numbers_from_the_environment_stay_in_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOME_NUMBER", "12")
    assert env_number("SOME_NUMBER", 1, maximum=12) == 12.0
    assert env_int("SOME_NUMBER", 1, maximum=12) == 12
    with pytest.raises(ConfigError, match=r"expected a number from 0 to 11\b"):
        env_number("SOME_NUMBER", 1, maximum=11)
    with pytest.raises(ConfigError, match="expected a whole number of at least 13"):
        env_int("SOME_NUMBER", 1, minimum=13)
    monkeypatch.setenv("SOME_NUMBER", "1.5")
    with pytest.raises(ConfigError, match="is not a whole number"):
        env_int("SOME_NUMBER", 1)


@pytest.mark.django_db(transaction=True)
def test_the_migrated_test_database_passes_the_start_up_check() -> None:
    assert database_problem() is None
    check_database()
