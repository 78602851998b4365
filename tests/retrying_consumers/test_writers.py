"""SQLite writers take turns on a file lock (retrying_consumers.writers)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection, transaction

from retrying_consumers import store, writers
from retrying_consumers.models import TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)

LOCK = "-writers.lock"
SQLITE_ONLY = pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="turns are for SQLite; PostgreSQL takes none (the first test checks it)",
)

HOLDER = """
import sys, time
from retrying_consumers.writers import Turns
turns = Turns(sys.argv[1])
turns.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


HOG = """
import sys, time
from retrying_consumers.writers import Turns
turns = Turns(sys.argv[1])
print("held", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    turns.acquire()
    turns.release()
"""


@contextmanager
def held_by_another_process(code: str, path: str, seconds: float) -> Iterator[None]:
    """Another process runs ``code`` on the lock file for ``seconds`` from now."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, path, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        yield
    finally:
        child.kill()
        child.wait()


def sqlite_lock() -> str:
    path = writers.lock_path(connection)
    assert path is not None
    return path


def seconds_to_write() -> float:
    started = time.monotonic()
    with writers.write_turn():
        TaskRecord.objects.filter(channel="no-such-channel").update(reason="")
    return time.monotonic() - started


def test_a_store_write_waits_for_another_process_holding_the_turn() -> None:
    if connection.vendor != "sqlite":
        # PostgreSQL wakes waiters on its row locks itself: no file, no turns.
        assert writers.lock_path(connection) is None
        seconds_to_write()
        assert writers._turns == {}
        return
    path = sqlite_lock()
    assert path == os.path.abspath(connection.settings_dict["NAME"]) + (
        writers.LOCK_SUFFIX
    )
    with held_by_another_process(HOLDER, path, 0.5):
        waited = seconds_to_write()
    assert waited >= 0.4
    assert seconds_to_write() < 0.2  # given up when the holder exits


@SQLITE_ONLY
def test_a_process_writing_in_a_loop_does_not_keep_the_turn() -> None:
    with held_by_another_process(HOG, sqlite_lock(), 3.0):
        # The hog gives its turn up and asks again at once, all the time.
        slowest = max(seconds_to_write() for _ in range(50))
    assert slowest < 0.1


@SQLITE_ONLY
def test_no_turn_is_taken_inside_an_outer_transaction() -> None:
    # The outer transaction may hold SQLite's own lock already: waiting for a
    # turn then could deadlock with a holder waiting for SQLite.
    with held_by_another_process(HOLDER, sqlite_lock(), 2.0):
        started = time.monotonic()
        with transaction.atomic():
            task, _ = store.create_task(
                channel="c", type="job.run", payload={}, ring_timeout=30
            )
            assert store.cancel(task.id).status == "cancelled"
        assert time.monotonic() - started < 1.0


def test_an_unopenable_lock_file_is_logged_once_and_writes_go_on(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "no-such-dir" / ("db" + writers.LOCK_SUFFIX))
    monkeypatch.setattr(writers, "lock_path", lambda connection: missing)
    monkeypatch.setattr(writers, "_turns", {})
    for _ in range(3):
        task, _ = store.create_task(
            channel="c", type="job.run", payload={}, ring_timeout=30
        )
        assert store.cancel(task.id).status == "cancelled"
    warnings = [r for r in caplog.records if r.name == "retrying_consumers.store"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert missing in warnings[0].getMessage()
    assert "will not take turns" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("vendor", "name", "expected"),
    [
        ("sqlite", "/data/db.sqlite3", "/data/db.sqlite3" + LOCK),
        ("sqlite", "file:/data/db.sqlite3?cache=shared", "/data/db.sqlite3" + LOCK),
        ("sqlite", ":memory:", None),
        ("sqlite", "file:memdb1?mode=memory&cache=shared", None),
        ("sqlite", "", None),
        ("postgresql", "test", None),
    ],
)
def test_lock_path(vendor: str, name: str, expected: Any) -> None:
    fake = SimpleNamespace(vendor=vendor, settings_dict={"NAME": name})
    assert writers.lock_path(fake) == expected  # type: ignore[arg-type]
