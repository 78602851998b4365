"""SQLite writers take turns on a file lock, woken the moment the last one commits.

SQLite lets one connection write at a time. The others wait in its busy handler,
which sleeps in growing steps (1, 2, 5, 10, 15, 20, then 25 to 100 ms) between
tries. With several worker processes committing small batches, a waiter keeps
sleeping through the gaps between the other writers' commits: in a bench with
two workers, some batches waited more than a second, and a retry waited with
them. So the store's writes first take a turn on a lock file next to the
database, and the kernel wakes the next writer as soon as the turn is given up.
SQLite still guards the data; the turns only order the store's own writers, and
other writes (the admin, your own code) wait in the busy handler as before.

No turn is taken inside an outer transaction: that transaction may hold
SQLite's write lock already, and waiting for a turn while holding it could
deadlock with a writer that has the turn and waits for SQLite. Nor for
in-memory databases, on PostgreSQL (its row locks wake waiters at once), or
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


class Turns:
    """Turns between processes on the lock file at ``path`` (an ``flock``).

    Threads of one process queue on a thread lock first: they share the open
    file, and a ``flock`` held through it would not exclude them.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.threads = threading.Lock()

    def acquire(self) -> None:
        self.threads.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()


# (pid, lock path) -> this process's turns, or None where the file could not be
# opened (then there are no turns). Keyed by pid: a forked child must open the
# file for itself, or it would share its parent's lock.
_turns: dict[tuple[int, str], Turns | None] = {}
_turns_guard = threading.Lock()


@contextmanager
def write_turn(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Wait for this process's turn to write to ``using`` (SQLite only)."""
    connection = connections[using]
    turns = None if connection.in_atomic_block else _turns_for(connection)
    if turns is None:
        yield
        return
    turns.acquire()
    try:
        yield
    finally:
        turns.release()


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


def _turns_for(connection: BaseDatabaseWrapper) -> Turns | None:
    path = lock_path(connection)
    if path is None:
        return None
    key = (os.getpid(), path)
    try:
        return _turns[key]
    except KeyError:
        pass
    with _turns_guard:
        if key not in _turns:
            try:
                _turns[key] = Turns(path)
            except OSError as err:
                logger.warning(
                    "cannot open %s, so writers to the SQLite database will not "
                    "take turns and may wait longer for its lock: %s",
                    path,
                    err,
                )
                _turns[key] = None
        return _turns[key]
