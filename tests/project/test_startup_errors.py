"""Start-up mistakes end every entry point with one ``error:`` line and status 2.

The entry points run as real processes: ``manage.py`` commands, ``runworker``,
the ASGI import and daphne. None of them waits for a timeout here: Redis and
PostgreSQL are "unreachable" on closed ports, which refuse at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from project.devrun import free_port
from tests.project.entrypoints import assert_one_line_error, run

RUNWORKER = ["manage.py", "runworker", "examples"]


def closed_redis() -> dict[str, str]:
    """A Redis that refuses at once, for workers that must stop before Redis."""
    return {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "REDIS_CONNECT_TIMEOUT": "0.5",
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> dict[str, str]:
    """A fresh DATA_DIR and the SQLite database in it."""
    return {"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": ""}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *[
            (name, "nan")
            for name in (
                "CHANNEL_CAPACITY",
                "DATABASE_CONN_MAX_AGE",
                "REDIS_CONNECT_TIMEOUT",
                "PURGE_SUCCEEDED_DAYS",
                "PURGE_DEAD_DAYS",
                "PURGE_CANCELLED_DAYS",
                "EMAIL_PORT",
            )
        ],
        ("CHANNEL_CAPACITY", "inf"),
        ("DATABASE_CONN_MAX_AGE", "1e400"),
        ("REDIS_CONNECT_TIMEOUT", "inf"),
        ("PURGE_DEAD_DAYS", "1e400"),
        ("EMAIL_PORT", "-inf"),
        ("EMAIL_PORT", "70000"),
    ],
)
def test_numeric_variable_must_be_a_finite_number(
    name: str, value: str, data_dir: dict[str, str]
) -> None:
    result = run(["manage.py", "check"], **data_dir, **{name: value})
    assert_one_line_error(result, f"{name}={value!r}")
    assert "expected" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"), [("LOG_LEVEL", "LOUD"), ("TIME_ZONE", "Mars/Olympus_Mons")]
)
def test_log_level_and_time_zone_must_exist(
    name: str, value: str, data_dir: dict[str, str]
) -> None:
    result = run(["manage.py", "check"], **data_dir, **{name: value})
    assert_one_line_error(result, f"{name}={value!r}")


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "a-file" / "data"
    result = run(["manage.py", "check"], DATA_DIR=str(data), DATABASE_URL="")
    assert_one_line_error(result, f"DATA_DIR: cannot make the folder {data}")


def test_a_worker_does_not_wait_forever_for_redis(data_dir: dict[str, str]) -> None:
    env = {**data_dir, **closed_redis(), "REDIS_CONNECT_TIMEOUT": "nan"}
    result = run(RUNWORKER, timeout=30, **env)
    assert_one_line_error(result, "REDIS_CONNECT_TIMEOUT='nan'")
