"""Ringing: telling a worker channel that a task's attempt is ready to run.

A ring carries only the task id and attempt number; the store holds the rest.
Rings sent together travel as one message of ``RINGS_TYPE`` (the worker splits
it again, and takes only what it has room for). A ring that fails (Redis down,
``ChannelFull``) loses nothing: the task stays queued with a ``due_at``, and the
scheduler rings it again.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer

from .batching import GroupCommit, group_commit
from .models import TaskRecord

logger = logging.getLogger("retrying_consumers.doorbell")

#: Seconds a synchronous ring may take before the task is left to be rung again.
SYNC_RING_TIMEOUT = 10.0
#: The ``type`` of a message that carries several rings.
RINGS_TYPE = "retrying_consumers.rings"
#: Rings sent in one message at most.
MAX_RINGS_PER_MESSAGE = 50
#: A ring handed over within BURST seconds of the channel's last send waits
#: RING_LINGER seconds for others to join it; a lone ring leaves at once.
BURST = 0.005
RING_LINGER = 0.005


def ring_message(task: TaskRecord) -> dict[str, Any]:
    """The channel-layer message that asks for the task's next attempt."""
    return {"type": task.type, "task_id": str(task.id), "attempt": task.attempt + 1}


async def aring(task: TaskRecord) -> bool:
    """Send the ring; False (and a log line) if the channel layer refused it.

    Rings sent at the same moment from one event loop travel together, one
    message per channel (see :mod:`retrying_consumers.batching`).
    """
    return await group_commit("rings", lambda: GroupCommit(_send_ring_batch))(task)


async def _send_ring_batch(tasks: list[TaskRecord]) -> list[bool | Exception]:
    by_channel: dict[str, list[int]] = {}
    for n, task in enumerate(tasks):
        by_channel.setdefault(task.channel, []).append(n)
    sent: list[bool | Exception] = [False] * len(tasks)

    async def send(channel: str, members: list[int]) -> None:
        for start in range(0, len(members), MAX_RINGS_PER_MESSAGE):
            chunk = members[start : start + MAX_RINGS_PER_MESSAGE]
            ok = await _send_rings(channel, [ring_message(tasks[n]) for n in chunk])
            for n in chunk:
                sent[n] = ok

    await asyncio.gather(*(send(c, m) for c, m in by_channel.items()))
    return sent


def rings_in(message: dict[str, Any]) -> list[Any]:
    """The rings one channel message carries: itself, or each ring of a batch."""
    if message.get("type") == RINGS_TYPE and isinstance(message.get("rings"), list):
        return list(message["rings"])
    return [message]


def batch_message(rings: list[dict[str, Any]]) -> dict[str, Any]:
    """One channel message for ``rings``: the ring itself when there is one."""
    return rings[0] if len(rings) == 1 else {"type": RINGS_TYPE, "rings": rings}


def ring(task: TaskRecord) -> None:
    """Ring from code outside an event loop; returns at once.

    The ring is handed to this process's ring loop, which sends the rings
    handed to it meanwhile as one message per channel (up to
    ``MAX_RINGS_PER_MESSAGE``): a burst of ``enqueue`` calls costs one channel
    send per batch, not per task. A ring that fails or takes longer than
    ``SYNC_RING_TIMEOUT`` is logged; the task stays queued and the scheduler
    rings it again. Rings not yet sent when the process exits are sent at exit
    (see :func:`flush`).
    """
    _ring_sender().put(task.channel, ring_message(task))


def flush(timeout: float | None = None) -> bool:
    """Wait until the rings handed over so far have been sent (or have failed).

    False if that took longer than ``timeout`` (default ``SYNC_RING_TIMEOUT``).
    Called at exit; tests and scripts may call it too.
    """
    sender = _sender
    if sender is None or sender.pid != os.getpid():
        return True
    future = asyncio.run_coroutine_threadsafe(sender.drain(), sender.loop)
    try:
        future.result(timeout=SYNC_RING_TIMEOUT if timeout is None else timeout)
    except TimeoutError:
        future.cancel()
        return False
    return True


class _RingSender:
    """Sends the rings of synchronous code from one private event loop.

    ``async_to_sync`` would make a new loop, and with it a new Redis connection
    pool, for every ring; this loop lives as long as the process.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.senders: dict[str, asyncio.Task[None]] = {}
        self.last_sent: dict[str, float] = {}
        threading.Thread(
            target=self.loop.run_forever, name="retrying-consumers-ring", daemon=True
        ).start()

    def put(self, channel: str, message: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._add, channel, message)

    def _add(self, channel: str, message: dict[str, Any]) -> None:
        self.pending.setdefault(channel, []).append(message)
        if channel not in self.senders:
            self.senders[channel] = self.loop.create_task(self._send(channel))

    async def _send(self, channel: str) -> None:
        try:
            while rings := self.pending.get(channel):
                if self.loop.time() - self.last_sent.get(channel, -1e9) < BURST:
                    # In a burst: let a few more rings join this message.
                    await asyncio.sleep(RING_LINGER)
                batch = rings[:MAX_RINGS_PER_MESSAGE]
                del rings[:MAX_RINGS_PER_MESSAGE]
                await _send_rings(channel, batch, SYNC_RING_TIMEOUT)
                self.last_sent[channel] = self.loop.time()
        finally:
            del self.senders[channel]
            if not self.pending.get(channel):
                self.pending.pop(channel, None)

    async def drain(self) -> None:
        while self.senders:
            await asyncio.gather(*self.senders.values(), return_exceptions=True)


async def _send_rings(
    channel: str, rings: list[dict[str, Any]], timeout: float | None = None
) -> bool:
    """Send ``rings`` as one message; False (and a log line) if it failed."""
    layer = get_channel_layer()
    try:
        if layer is None:
            raise RuntimeError("no channel layer is configured")
        async with asyncio.timeout(timeout):
            await layer.send(channel, batch_message(rings))
    except Exception as err:  # ChannelFull, connection errors: the store re-rings
        if isinstance(err, TimeoutError):
            err = TimeoutError(f"no answer within {timeout:g} s")
        ids = [str(r.get("task_id")) for r in rings]
        logger.warning(
            "%s ring(s) failed, the store will ring again: channel=%s task_ids=%s "
            "error=%s",
            len(rings),
            channel,
            ",".join(ids[:10]) + (",..." if len(ids) > 10 else ""),
            f"{type(err).__name__}: {err}",
            extra={"channel": channel, "task_id": ids[0] if len(ids) == 1 else None},
        )
        return False
    return True


_sender_lock = threading.Lock()
_sender: _RingSender | None = None


def _ring_sender() -> _RingSender:
    """The ring sender of this process (a forked child starts its own)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = _RingSender()
        return _sender


atexit.register(flush)
