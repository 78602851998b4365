"""Store outages: said once when they start, once when they end.

While the database is away, every claim, outcome write, lease renewal and
scheduler pass of a worker fails. Logging each with a traceback would write
about a hundred lines a second per worker. Instead the first failure is logged
at ERROR, the later ones are counted, and the first success afterwards logs at
WARNING how long the outage lasted and how many operations waited it out.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import InterfaceError, OperationalError

logger = logging.getLogger("retrying_consumers.store")


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the store cannot be reached or is busy now.

    Connection failures, a server shutting down, SQLite's "database is locked":
    errors that the same statement may not raise a moment later. Errors about
    the data or the schema are not outages.
    """
    return isinstance(error, OperationalError | InterfaceError)


class StoreHealth:
    """Counts the failed store operations of an outage; logs its start and end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._back_at: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """Whether the last store operation failed with an outage error."""
        return self._down_since is not None

    def settling(self, seconds: float) -> bool:
        """Whether the store is away, or came back less than ``seconds`` ago.

        Leases expire during an outage because nobody can renew them; until
        every live worker has had ``seconds`` to renew its own, an expired
        lease says nothing about its worker.
        """
        if self._down_since is not None:
            return True
        back_at = self._back_at
        return back_at is not None and time.monotonic() - back_at < seconds

    def failed(self, what: str, error: BaseException) -> None:
        """Record that ``what`` failed because the store is away."""
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        logger.error(
            "store unavailable, waiting for it: operation=%s error=%s",
            what,
            f"{type(error).__name__}: {error}",
            extra={"outcome": "store_unavailable"},
        )

    def succeeded(self) -> None:
        """Record a store operation that worked; logs the end of an outage."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._down_since is None:
                return
            self._back_at = time.monotonic()
            seconds = self._back_at - self._down_since
            failures, self._failures, self._down_since = self._failures, 0, None
        logger.warning(
            "store is back after %.1f s: failed_operations=%s",
            seconds,
            failures,
            extra={"outcome": "store_back", "failed_operations": failures},
        )


#: This process's view of the store.
store_health = StoreHealth()
