"""Cancelling a running attempt in whichever worker runs it.

``cancel()`` ends the task in the store first (the store is the truth: the task
is cancelled, its running attempt recorded as cancelled and its lease released,
in one transaction). Then it tells every worker, on the channel-layer group
``CANCEL_GROUP``, and the worker that runs the attempt stops it:

- an async handler is cancelled where it awaits (its ``CancelledError`` may run
  ``finally`` blocks; nothing more is recorded);
- a sync handler cannot be stopped, since a thread cannot be: it sees
  ``self.task.cancelled`` turn true and should return; whatever it returns or
  raises afterwards is ignored.

``group_send`` can drop a message, so the message is only the fast path: a
worker also stops the attempt when a lease renewal finds the lease gone
(``LEASE_SECONDS / 3`` at the latest).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger("retrying_consumers.worker")

#: The group every worker process listens on for cancelled attempts.
CANCEL_GROUP = "retrying-consumers.cancel"
#: The ``type`` of its messages.
CANCEL_TYPE = "retrying.cancel"
#: Seconds between a worker's renewals of its group membership (channels-redis
#: forgets a member after ``group_expiry``, a day by default).
REJOIN_INTERVAL = 600.0
MAX_BACKOFF = 5.0


class Revocation:
    """One attempt running in this process, which a cancel may stop.

    For an async attempt, ``job`` is the asyncio task that awaits the handler.
    It is cancelled from its own loop, and only while the attempt is in the
    ``revocable`` block (``armed``): a cancel that comes as the handler returns
    must not land on the recording of the outcome.
    """

    def __init__(self, job: asyncio.Task[Any] | None) -> None:
        self.job = job
        self.loop = asyncio.get_running_loop() if job is not None else None
        self.reason = ""
        self.armed = True
        self.sent = False  # job.cancel() was called for this attempt
        self._requested = threading.Event()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self, reason: str) -> None:
        if self._requested.is_set():
            return
        self.reason = reason
        self._requested.set()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        if self.armed and not self.sent and self.job is not None:
            self.sent = True
            self.job.cancel()

    def settle(self) -> bool:
        """Close the block; True if the attempt was cancelled (its own
        cancellation is taken back, so that only a stop's remains)."""
        self.armed = False
        if self.sent and self.job is not None:
            self.sent = False
            self.job.uncancel()
        return self.requested


_lock = threading.Lock()
_running: dict[str, Revocation] = {}


@contextmanager
def revocable(
    task_id: str, job: asyncio.Task[Any] | None = None
) -> Iterator[Revocation]:
    """Register the attempt of ``task_id`` (its ``job``, if async) while it runs."""
    entry = Revocation(job)
    with _lock:
        _running[task_id] = entry
    try:
        yield entry
    finally:
        with _lock:
            if _running.get(task_id) is entry:
                del _running[task_id]


def revoke(task_id: str, reason: str = "cancelled") -> bool:
    """Stop the attempt of ``task_id`` if it runs in this process."""
    with _lock:
        entry = _running.get(task_id)
    if entry is None:
        return False
    entry.request(reason)
    return True


def is_revoked(task_id: str) -> bool:
    """Whether the attempt of ``task_id`` running here has been cancelled."""
    with _lock:
        entry = _running.get(task_id)
    return entry is not None and entry.requested


def announce(task_id: str, reason: str) -> None:
    """Tell every worker that ``task_id`` was cancelled; returns at once.

    Sent from this process's ring loop; a failure is logged and left to the
    lease renewal of the worker that runs the attempt.
    """
    from .doorbell import in_ring_loop

    in_ring_loop(aannounce(task_id, reason)).add_done_callback(_log_failure)


async def aannounce(task_id: str, reason: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(
        CANCEL_GROUP, {"type": CANCEL_TYPE, "task_id": task_id, "reason": reason}
    )


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning(
            "could not tell the workers of a cancel (their lease renewal will "
            "notice it): %r",
            future.exception(),
        )


async def listen(layer: Any) -> None:
    """Stop the attempts that a cancel names, for as long as the worker runs."""
    delay = 0.1
    channel: str | None = None
    rejoin: asyncio.Task[None] | None = None
    try:
        while True:
            try:
                if channel is None:
                    # A channel of its own, not a process-local "!" one: the
                    # worker's listeners already take from channels by name.
                    channel = f"{CANCEL_GROUP}.{uuid.uuid4().hex}"
                    await layer.group_add(CANCEL_GROUP, channel)
                    rejoin = asyncio.create_task(_rejoin(layer, channel))
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning(
                    "cancel listener: %r; trying again in %.1f s", err, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.1
            _received(message)
    finally:
        if rejoin is not None:
            rejoin.cancel()
        if channel is not None:
            await _leave(layer, channel)


def _received(message: Any) -> None:
    task_id = message.get("task_id") if isinstance(message, dict) else None
    if isinstance(task_id, str):
        reason = message.get("reason")
        revoke(task_id, reason if isinstance(reason, str) else "cancelled")


async def _leave(layer: Any, channel: str) -> None:
    """Leave the group as the worker stops (a killed one is forgotten by the
    channel layer after its ``group_expiry``)."""
    try:
        async with asyncio.timeout(1):
            await layer.group_discard(CANCEL_GROUP, channel)
    except Exception as err:
        logger.debug("cancel listener could not leave its group: %r", err)


async def _rejoin(layer: Any, channel: str) -> None:
    while True:
        await asyncio.sleep(REJOIN_INTERVAL)
        try:
            await layer.group_add(CANCEL_GROUP, channel)
        except Exception as err:
            logger.warning("cancel listener could not rejoin its group: %r", err)
