"""Start-up mistakes end every entry point with one ``error:`` line and status 2.

The entry points run as real processes: ``manage.py`` commands, ``runworker``,
the ASGI import and daphne. None of them waits for a timeout here: Redis and
PostgreSQL are "unreachable" on closed ports, which refuse at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from project.devrun import free_port
from tests.processes import database_url
from tests.project.entrypoints import assert_one_line_error, run

ASGI_IMPORT = ["-c", "import project.asgi"]
RUNWORKER = ["manage.py", "runworker", "examples"]
DAPHNE = ["-m", "daphne", "-b", "127.0.0.1", "-p"]


def entry(name: str) -> list[str]:
    """The arguments of ``python`` for one entry point."""
    if name == "daphne":
        return [*DAPHNE, str(free_port()), "project.asgi:application"]
    if name == "asgi":
        return ASGI_IMPORT
    if name == "runworker":
        return RUNWORKER
    return ["manage.py", *name.split()]


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


@pytest.fixture
def empty_database(data_dir: dict[str, str]) -> Iterator[dict[str, str]]:
    """Environment for a database with no tables, on the store the tests use."""
    if connection.vendor != "postgresql":
        yield data_dir
        return
    import psycopg

    conf = connection.settings_dict
    name = f"{conf['NAME']}_empty"[:63]
    server = {key.lower(): conf[key] or None for key in ("HOST", "PORT", "USER")}
    server["password"] = conf["PASSWORD"] or None
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    # From the server's own database: the test database may not exist, and
    # CREATE DATABASE cannot run in a test's transaction.
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(drop)
        admin.execute(f'CREATE DATABASE "{name}"')
    yield {**data_dir, "DATABASE_URL": database_url().rsplit("/", 1)[0] + "/" + name}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(drop)


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


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--concurrency", "nan"),
        ("--concurrency", "1e400"),
        ("--concurrency", "2.5"),
        ("--grace-period", "nan"),
        ("--grace-period", "inf"),
        ("--grace-period", "1e400"),
        ("--grace-period", "-inf"),
    ],
)
def test_runworker_numeric_options_must_be_finite(
    option: str, value: str, data_dir: dict[str, str]
) -> None:
    result = run([*RUNWORKER, f"{option}={value}"], **data_dir, **closed_redis())
    assert_one_line_error(result, f"argument {option}: {value!r}")


@pytest.mark.parametrize(
    ("entry_point", "options", "words"),
    [
        ("check", {"LEASE_SECOND": 5}, "LEASE_SECOND"),
        ("asgi", {"LEASE_SECONDS": float("nan")}, "'LEASE_SECONDS']"),
        ("runworker", {"GRACE_PERIOD": float("inf")}, "'GRACE_PERIOD']"),
        ("runworker", {"WORKER_CONCURRENCY": 2.5}, "'WORKER_CONCURRENCY']"),
        ("daphne", {"METRICS_TOKENS": "x"}, "METRICS_TOKENS"),
    ],
)
def test_bad_library_options_stop_every_entry_point(
    entry_point: str,
    options: dict[str, Any],
    words: str,
    data_dir: dict[str, str],
) -> None:
    result = run(
        entry(entry_point),
        timeout=30,
        **data_dir,
        **closed_redis(),
        DJANGO_SETTINGS_MODULE="tests.project.library_settings",
        TEST_RETRYING_CONSUMERS=json.dumps(options),
    )
    assert_one_line_error(result, words)
    assert "RETRYING_CONSUMERS" in result.stderr


@pytest.mark.parametrize("entry_point", ["runworker", "asgi", "daphne"])
def test_an_unmigrated_database_stops_workers_and_daphne(
    entry_point: str, empty_database: dict[str, str]
) -> None:
    result = run(entry(entry_point), timeout=30, **empty_database, **closed_redis())
    assert_one_line_error(result, "run manage.py migrate")
    assert "retrying_consumers" in result.stderr


def test_the_asgi_import_is_checked_inside_an_event_loop_too(
    empty_database: dict[str, str],
) -> None:
    # As uvicorn imports the application: where Django refuses blocking calls.
    code = "import asyncio\nasync def load(): import project.asgi\nasyncio.run(load())"
    result = run(["-c", code], **empty_database)
    assert_one_line_error(result, "run manage.py migrate")


def test_the_check_follows_the_migrations_of_the_database(
    empty_database: dict[str, str],
) -> None:
    def manage(*args: str) -> None:
        done = run(["manage.py", *args, "-v", "0"], **empty_database)
        assert done.returncode == 0, done.stderr

    manage("migrate")  # works on the empty database
    ready = run(ASGI_IMPORT, **empty_database)
    assert (ready.returncode, ready.stderr) == (0, "")

    manage("migrate", "retrying_consumers", "0002")
    result = run(ASGI_IMPORT, **empty_database)
    assert_one_line_error(result, "retrying_consumers.0003_partial_task_indexes")

    manage("migrate")
    drop = "DROP TABLE retrying_consumers_workerrecord"
    manage(
        "shell",
        "-c",
        f"from django.db import connection; connection.cursor().execute({drop!r})",
    )
    result = run(RUNWORKER, **empty_database, **closed_redis())
    assert_one_line_error(result, "no table retrying_consumers_workerrecord")


@pytest.mark.parametrize("entry_point", ["migrate", "tasks list", "runworker", "asgi"])
def test_an_unreachable_database_is_one_line(
    entry_point: str, data_dir: dict[str, str]
) -> None:
    port = free_port()
    url = f"postgres://postgres@127.0.0.1:{port}/nothing"
    env = {**data_dir, **closed_redis(), "DATABASE_URL": url}
    result = run(entry(entry_point), **env)
    assert_one_line_error(result, f"127.0.0.1:{port}")
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize("entry_point", ["migrate", "check", "runworker", "asgi"])
def test_a_sqlite_file_in_a_missing_folder_is_one_line(
    entry_point: str, data_dir: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "no" / "such" / "folder"
    url = f"sqlite:///{folder / 'db.sqlite3'}"
    env = {**data_dir, **closed_redis(), "DATABASE_URL": url}
    result = run(entry(entry_point), **env)
    assert_one_line_error(result, str(folder))
    assert "DATABASE_URL" in result.stderr
    assert not folder.exists()
