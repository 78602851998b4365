"""Group commit: calls made at the same moment share one trip.

A worker runs several attempts at once. Each of them claims its attempt, records
its outcome and announces it; done one by one, each call is a hop to the
database thread and a commit, or a round of Redis commands. A
:class:`GroupCommit` collects the calls made while the previous batch was on its
way, and runs them as one call of a ``*_many`` function: under load the batches
grow by themselves, and a lone call waits for nothing but one turn of the event
loop. Each item still gets its own result, and every claim is still its own
conditional UPDATE.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import close_old_connections, connections

logger = logging.getLogger("retrying_consumers.batching")

#: Items per transaction at most; the rest go in the next one.
MAX_BATCH = 100
#: Seconds after a batch ran on a connection without error during which the
#: next batch skips the connection's health check (``CONN_HEALTH_CHECKS``).
HEALTHY_FOR = 1.0


class GroupCommit[T, R]:
    """Run ``run_many`` (items -> a result or exception each) in batches.

    ``orphaned(pairs)`` gets the (item, result) pairs whose caller was cancelled
    while it waited: a claim nobody will run must be handed back. In a burst,
    batches leave at most every ``linger`` seconds (a batch waits until
    ``linger`` has passed since the last one left), so that calls that can
    afford it travel in bigger batches; a lone call never waits. A batch holds
    at most ``max_batch`` items (default ``MAX_BATCH``).
    """

    def __init__(
        self,
        run_many: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        orphaned: Callable[[list[tuple[T, R]]], Awaitable[None]] | None = None,
        linger: float = 0.0,
        max_batch: int | None = None,
    ) -> None:
        self.run_many = run_many
        self.max_batch = max_batch
        self.orphaned = orphaned
        self.linger = linger
        self.last_left = -float("inf")
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Add ``item`` to the next batch; the future holds its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.flusher is None:
            # A context of its own: whatever the first caller's context holds
            # (a flag a failed handler left set) must not fail the others.
            self.flusher = asyncio.create_task(
                self._flush(), context=contextvars.Context()
            )
        return future

    async def wait(self) -> None:
        """Return when every batch submitted so far has been run."""
        while self.flusher is not None:
            await asyncio.shield(self.flusher)

    async def _flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            while self.pending:
                # In a burst, batches leave ``linger`` apart: those that came
                # while the last one was on its way wait for more to join.
                wait = self.last_left + self.linger - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                size = self.max_batch or MAX_BATCH
                batch = self.pending[:size]
                del self.pending[:size]
                self.last_left = loop.time()
                await self._run(batch)
        finally:
            self.flusher = None
            for _, future in self.pending:  # only when this task was cancelled
                future.cancel()
            self.pending.clear()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self.run_many(items)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as err:
            results = [err] * len(batch)
        orphans: list[tuple[T, R]] = []
        for (item, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                if not isinstance(result, Exception):
                    orphans.append((item, result))
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if orphans and self.orphaned is not None:
            try:
                await self.orphaned(orphans)
            except Exception:
                logger.exception(
                    "could not hand back %s orphaned result(s)", len(orphans)
                )


_per_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Hashable, GroupCommit[Any, Any]]
] = weakref.WeakKeyDictionary()


def group_commit[T, R](
    key: Hashable,
    make: Callable[[], GroupCommit[T, R]],
) -> GroupCommit[T, R]:
    """The running loop's batcher for ``key``, made by ``make`` on first use."""
    batchers = _per_loop.setdefault(asyncio.get_running_loop(), {})
    found = batchers.get(key)
    if found is None:
        found = batchers[key] = make()
    return found


def in_database[T, R](
    key: Hashable,
    run_many: Callable[[list[T]], Sequence[R | Exception]],
    orphaned: Callable[[list[tuple[T, R]]], None] | None = None,
) -> GroupCommit[T, R]:
    """:func:`group_commit` of a store function run in Django's database thread."""
    return group_commit(
        key,
        lambda: GroupCommit(
            StoreCall(run_many),
            StoreCall(orphaned) if orphaned is not None else None,
        ),
    )


class StoreCall(SyncToAsync[..., Any]):
    """Channels' ``database_sync_to_async`` for batches a worker runs back to back.

    The same thread and the same care of connections (old or broken ones are
    closed before and after), except for one thing. With ``CONN_HEALTH_CHECKS``,
    Django checks a connection before the first query of each call, with a
    round trip (``SELECT 1`` on PostgreSQL): one more per batch than the batch
    itself. A connection that ran a batch without error less than
    ``HEALTHY_FOR`` seconds ago skips the check. If it broke since, the batch
    fails as it would have, and the next call closes the connection (Django
    checks a connection after any error).
    """

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        now = time.monotonic()
        for conn in connections.all(initialized_only=True):
            verified = _verified.get(conn)
            if (
                conn.connection is not None
                and verified is not None
                and verified[0] is conn.connection
                and now - verified[1] < HEALTHY_FOR
            ):
                conn.health_check_done = True
        try:
            return super().thread_handler(loop, *args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            now = time.monotonic()
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None and not conn.errors_occurred:
                    _verified[conn] = (conn.connection, now)
                else:
                    _verified.pop(conn, None)
            close_old_connections()


# Django's connection wrapper -> (its database connection, when a batch last
# ran on it without error).
_verified: weakref.WeakKeyDictionary[Any, tuple[Any, float]] = (
    weakref.WeakKeyDictionary()
)
