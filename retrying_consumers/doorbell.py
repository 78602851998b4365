"""Ringing: telling a worker channel that a task's attempt is ready to run.

A ring carries only the task id and attempt number; the store holds the rest. A
ring that fails (Redis down, ``ChannelFull``) loses nothing: the task stays queued
with a ``due_at``, and the scheduler rings it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer

from .models import TaskRecord

logger = logging.getLogger("retrying_consumers.doorbell")

#: Seconds a synchronous ring may take before the task is left to be rung again.
SYNC_RING_TIMEOUT = 10.0


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
    """Synchronous :func:`aring`, for code outside an event loop.

    Runs on one private, long-lived event loop: ``async_to_sync`` would make a
    new loop, and with it a new Redis connection pool, for every call.
    """
    future = asyncio.run_coroutine_threadsafe(aring(task), _ring_loop())
    try:
        return future.result(timeout=SYNC_RING_TIMEOUT)
    except TimeoutError:
        future.cancel()
        logger.warning(
            "ring timed out, will ring again: task_id=%s channel=%s",
            task.id,
            task.channel,
            extra={"task_id": str(task.id), "channel": task.channel},
        )
        return False


_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None


def _ring_loop() -> asyncio.AbstractEventLoop:
    """The private loop of this process (a forked child starts its own)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="retrying-consumers-ring", daemon=True
            )
            thread.start()
            _loop = (os.getpid(), loop)
        return _loop[1]
