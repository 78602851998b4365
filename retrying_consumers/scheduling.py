"""Ringing due tasks again: retries after their backoff, and lost rings.

A waiting retry holds no worker: it is a row with a ``due_at``. This module rings
such rows when they fall due, from an in-process timer set when the retry was
decided, and from :func:`aring_due`, which any process may call periodically to
pick up what a dead process's timers would have rung. Taking a ring is a
conditional UPDATE, so any number of processes may race for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from functools import partial

from channels.db import database_sync_to_async
from django.utils import timezone

from . import store
from .batching import GroupCommit, in_database
from .conf import library_settings
from .doorbell import aring
from .models import TaskRecord

logger = logging.getLogger("retrying_consumers.scheduler")

# Timers' tasks, kept referenced until they finish.
_pending: set[asyncio.Task[bool]] = set()


def schedule_ring(task: TaskRecord) -> None:
    """Ring ``task`` when its ``due_at`` comes, from this process's event loop."""
    if task.due_at is None:
        return
    delay = max(0.0, (task.due_at - timezone.now()).total_seconds())
    loop = asyncio.get_running_loop()
    loop.call_later(delay, _start, loop, task.id)


def _start(loop: asyncio.AbstractEventLoop, task_id: uuid.UUID) -> None:
    job = loop.create_task(aring_if_due(task_id))
    _pending.add(job)
    job.add_done_callback(_pending.discard)


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
    """Ring every due task (up to ``limit``); return how many this call rang."""
    ids = await database_sync_to_async(store.due_task_ids)(limit)
    rung = await asyncio.gather(*(aring_if_due(task_id) for task_id in ids))
    return sum(rung)
