"""SQLite writers take turns on a file lock, woken the moment the last one commits.

SQLite lets one connection write at a time. The others wait in its busy handler,
which sleeps in growing steps (1, 2, 5, 10, 15, 20, then 25 to 100 ms) between
tries. With several worker processes committing small batches, a waiter keeps
sleeping through the gaps between the other writers' commits: in a bench with
two workers, some batches waited more than a second, and a retry waited with
them. So the store's writes first take an exclusive ``flock`` on a file next to
the database, and the kernel wakes the next writer as soon as it is released.
SQLite still guards the data; the lock only orders the store's own writers, and
other writes (the admin, your own code) wait in the busy handler as before.

The turn is not taken inside an outer transaction: that transaction may hold
SQLite's write lock already, and waiting for the file lock while holding it
could deadlock with a writer that holds the file lock and waits for SQLite. Nor
for in-memory databases, on PostgreSQL (its row locks wake waiters at once), or
where ``fcntl`` does not exist.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("retrying_consumers.store")

#: Appended to the database file's name to name its lock file.
LOCK_SUFFIX = "-writers.lock"

# (pid, lock path) -> this process's lock for its threads and its open file; or
# None where the file could not be opened (then there are no turns). Keyed by
# pid: a forked child must open its own file, or it would share its parent's lock.
_locks: dict[tuple[int, str], tuple[threading.Lock, int] | None] = {}
_locks_guard = threading.Lock()


@contextmanager
def write_turn(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Wait for this process's turn to write to ``using`` (SQLite only)."""
    connection = connections[using]
    lock = None if connection.in_atomic_block else _lock_for(connection)
    if lock is None:
        yield
        return
    in_process, fd = lock
    with in_process:  # a flock is per open file, so threads queue here first
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def writing(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """A transaction on ``using``, begun in this process's turn to write."""
    with write_turn(using), transaction.atomic(using=using):
        yield


def lock_path(connection: BaseDatabaseWrapper) -> str | None:
    """The lock file of a SQLite database on disk; None for any other."""
    if connection.vendor != "sqlite" or fcntl is None:
        return None
    name = str(connection.settings_dict["NAME"] or "")
    if not name or name == ":memory:" or "mode=memory" in name:
        return None
    if name.startswith("file:"):
        name = name.removeprefix("file:").split("?", 1)[0]
    return os.path.abspath(name) + LOCK_SUFFIX


def _lock_for(connection: BaseDatabaseWrapper) -> tuple[threading.Lock, int] | None:
    path = lock_path(connection)
    if path is None:
        return None
    key = (os.getpid(), path)
    try:
        return _locks[key]
    except KeyError:
        pass
    with _locks_guard:
        if key not in _locks:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                logger.warning(
                    "cannot open %s, so writers to the SQLite database will not "
                    "take turns and may wait longer for its lock: %s",
                    path,
                    err,
                )
                _locks[key] = None
            else:
                _locks[key] = (threading.Lock(), fd)
        return _locks[key]
