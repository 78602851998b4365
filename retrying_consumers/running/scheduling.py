"""Ringing due tasks again: retries after their backoff, and lost rings.

A waiting retry holds no worker: it is a row with a ``due_at``. This module rings
such rows when they fall due, from an in-process timer set when the retry was
decided, and from :func:`aring_due`, which any process may call periodically to
pick up what a dead process's timers would have rung, lost rings, and rings
the channel layer refused (``ChannelFull``), as many at a time as the channel
has room for. Taking a ring is a conditional UPDATE, so any number of
processes may race for it.

A worker process registers itself with :func:`serve_due_retries`: its timers
then hand a due retry to the worker, which runs it ahead of the rings waiting in
the channel (they are sent in order, so a retry rung into a busy channel waits
behind every first attempt sent before it). The claim itself takes a retrying
task that is due, so such a retry needs no ring at all.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.utils import timezone

from ..core.conf import library_settings
from ..messaging.batching import GroupCommit, in_database
from ..messaging.doorbell import aring, aroom, ring_message
from ..models import TaskRecord
from ..storage import store

logger = logging.getLogger("retrying_consumers.scheduler")

#: Rings one look of the scheduler sends to one channel at most, however much
#: room it has: 100 messages of ``MAX_RINGS_PER_MESSAGE``.
MAX_RINGS_PER_LOOK = 5_000

#: True where the caller runs retries itself (``retrying_consumers.testing``):
#: :func:`schedule_ring` then sets no timer.
rings_scheduled_elsewhere: ContextVar[bool] = ContextVar(
    "retrying_consumers_rings_scheduled_elsewhere", default=False
)

# Timers' tasks, kept referenced until they finish.
_pending: set[asyncio.Task[bool]] = set()


class DueRetryRunner(Protocol):
    """What a worker offers its event loop's timers (see :func:`serve_due_retries`)."""

    async def run_due(
        self, task_id: uuid.UUID, channel: str, ring: dict[str, Any]
    ) -> bool:
        """Run ``ring`` (a retry fallen due) soon; False to have it rung instead.

        A runner that accepts a retry it cannot start within a short while
        hands it back with :func:`ring_soon`.
        """
        ...


_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DueRetryRunner] = (
    weakref.WeakKeyDictionary()
)


def serve_due_retries(runner: DueRetryRunner | None) -> None:
    """Give this loop's due retries to ``runner`` first (None: ring them all)."""
    loop = asyncio.get_running_loop()
    if runner is None:
        _runners.pop(loop, None)
    else:
        _runners[loop] = runner


def schedule_ring(task: TaskRecord) -> None:
    """Ring ``task`` when its ``due_at`` comes, from this process's event loop."""
    if task.due_at is None or rings_scheduled_elsewhere.get():
        return
    delay = max(0.0, (task.due_at - timezone.now()).total_seconds())
    loop = asyncio.get_running_loop()
    loop.call_later(delay, _start, loop, task.id, task.channel, ring_message(task))


def _start(
    loop: asyncio.AbstractEventLoop,
    task_id: uuid.UUID,
    channel: str,
    ring: dict[str, Any],
) -> None:
    _keep(loop.create_task(_when_due(task_id, channel, ring)))


def _keep(job: asyncio.Task[bool]) -> None:
    _pending.add(job)
    job.add_done_callback(_pending.discard)


async def _when_due(task_id: uuid.UUID, channel: str, ring: dict[str, Any]) -> bool:
    runner = _runners.get(asyncio.get_running_loop())
    if runner is not None:
        try:
            if await runner.run_due(task_id, channel, ring):
                return True
        except Exception:
            logger.exception("could not run due task_id=%s here; ringing it", task_id)
    return await aring_if_due(task_id)


def ring_at(task_id: uuid.UUID, when: datetime) -> None:
    """Take the ring of ``task_id`` and send it at ``when`` (if it is due then),
    from this process's event loop; the scheduler's look is the safety net."""
    delay = max(0.0, (when - timezone.now()).total_seconds())
    loop = asyncio.get_running_loop()
    loop.call_later(delay, lambda: _keep(loop.create_task(aring_if_due(task_id))))


def ring_soon(task_id: uuid.UUID) -> None:
    """Take the ring of a due task and send it, in the background."""
    _keep(asyncio.get_running_loop().create_task(aring_if_due(task_id)))


async def aring_if_due(task_id: uuid.UUID) -> bool:
    """Take the ring of one due task and send it; False if someone else did."""
    try:
        task = await _ring_takers(library_settings().ring_timeout)(task_id)
    except Exception:
        logger.exception("could not take the ring of task_id=%s; will retry", task_id)
        return False
    if task is None:
        return False
    await aring(task)
    return True


def _ring_takers(ring_timeout: float) -> GroupCommit[uuid.UUID, TaskRecord | None]:
    """This loop's batcher of ring takings: due tasks share one UPDATE."""
    return in_database(
        ("take_ring", ring_timeout),
        partial(store.take_rings, ring_timeout=ring_timeout),
    )


async def aring_due(limit: int = 100) -> int:
    """Ring due tasks, as many as each channel has room for; return how many.

    Each channel with due tasks gets the rings it can take now (see
    :func:`~retrying_consumers.doorbell.aroom`), up to ``MAX_RINGS_PER_LOOK``,
    or ``limit`` if its channel layer cannot tell; a full channel gets none,
    and its tasks stay due for the next look. So a burst refused with
    ``ChannelFull`` is rung again as the workers make room, and none of it
    is taken only to be refused again.
    """
    channels = await database_sync_to_async(store.due_channels)()
    rung = await asyncio.gather(*(_ring_due_of(c, limit) for c in channels))
    return sum(rung)


async def _ring_due_of(channel: str, limit: int) -> int:
    """Ring the due tasks of ``channel`` that it has room for."""
    room = await aroom(channel)
    count = limit if room is None else min(room, MAX_RINGS_PER_LOOK)
    if count <= 0:
        return 0
    ids = await database_sync_to_async(store.due_task_ids)(count, channel)
    rung = await asyncio.gather(*(aring_if_due(task_id) for task_id in ids))
    return sum(rung)
