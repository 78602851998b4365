"""Ringing: telling a worker channel that a task's attempt is ready to run.

A ring carries only the task id and attempt number; the store holds the rest. A
ring that fails (Redis down, ``ChannelFull``) loses nothing: the task stays queued
with a ``due_at``, and the scheduler rings it again.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from .models import TaskRecord

logger = logging.getLogger("retrying_consumers.doorbell")


def ring_message(task: TaskRecord) -> dict[str, Any]:
    """The channel-layer message that asks for the task's next attempt."""
    return {"type": task.type, "task_id": str(task.id), "attempt": task.attempt + 1}


async def aring(task: TaskRecord) -> bool:
    """Send the ring; False (and a log line) if the channel layer refused it."""
    layer = get_channel_layer()
    if layer is None:
        logger.critical("no channel layer configured; task_id=%s not rung", task.id)
        return False
    try:
        await layer.send(task.channel, ring_message(task))
    except Exception as err:  # ChannelFull, connection errors: the store re-rings
        logger.warning(
            "ring failed, will ring again: task_id=%s channel=%s error=%s",
            task.id,
            task.channel,
            f"{type(err).__name__}: {err}",
            extra={"task_id": str(task.id), "channel": task.channel},
        )
        return False
    return True


def ring(task: TaskRecord) -> bool:
    """Synchronous :func:`aring`, for code outside an event loop."""
    from asgiref.sync import async_to_sync

    return bool(async_to_sync(aring)(task))
