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
#: Seconds between sends of synchronous rings in a burst: the rings handed over
#: meanwhile wait to go together. A lone ring leaves at once, and so does each
#: ring of a steady 100 per second (10 ms apart). Bigger messages mean fewer
#: receives and bigger batches of claims in the workers: 8 ms rather than 5
#: cut the workers' CPU per task by 10-50% in bursts of enqueues.
RING_LINGER = 0.008


def ring_message(task: TaskRecord) -> dict[str, Any]:
    """The channel-layer message that asks for the task's next attempt."""
    return {"type": task.type, "task_id": str(task.id), "attempt": task.attempt + 1}


async def aring(task: TaskRecord) -> bool:
    """Send the ring; False (and a log line) if the channel layer refused it.

    Rings sent at the same moment from one event loop travel together, one
    message per channel (see :mod:`retrying_consumers.batching`).
    """
    return await group_commit("rings", lambda: GroupCommit(_send_ring_batch))(task)


async def _send_ring_batch(
    tasks: list[TaskRecord], timeout: float | None = None
) -> list[bool | Exception]:
    by_channel: dict[str, list[int]] = {}
    for n, task in enumerate(tasks):
        by_channel.setdefault(task.channel, []).append(n)
    sent: list[bool | Exception] = [False] * len(tasks)

    async def send(channel: str, members: list[int]) -> None:
        for start in range(0, len(members), MAX_RINGS_PER_MESSAGE):
            chunk = members[start : start + MAX_RINGS_PER_MESSAGE]
            rings = [ring_message(tasks[n]) for n in chunk]
            ok = await _send_rings(channel, rings, timeout)
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
    ``MAX_RINGS_PER_MESSAGE``; in a burst, sends leave ``RING_LINGER`` apart,
    and the rings handed over in between go together): a burst of ``enqueue``
    calls costs one channel send per batch, not per task. A ring that fails or
    takes longer than ``SYNC_RING_TIMEOUT`` is logged; the task stays queued
    and the scheduler rings it again. Rings not yet sent when the process
    exits are sent at exit (see :func:`flush`).
    """
    _handoff().put(task)


def flush(timeout: float | None = None) -> bool:
    """Wait until the rings handed over so far have been sent (or have failed).

    False if that took longer than ``timeout`` (default ``SYNC_RING_TIMEOUT``).
    Called at exit; tests and scripts may call it too.
    """
    if _loop is None or _loop[0] != os.getpid():
        return True
    future = asyncio.run_coroutine_threadsafe(_loop[2].drained(), _loop[1])
    try:
        future.result(timeout=SYNC_RING_TIMEOUT if timeout is None else timeout)
    except TimeoutError:
        future.cancel()
        return False
    return True


async def _send_sync_rings(tasks: list[TaskRecord]) -> list[bool | Exception]:
    return await _send_ring_batch(tasks, SYNC_RING_TIMEOUT)


def _sync_rings() -> GroupCommit[TaskRecord, bool]:
    """The ring loop's batcher: in a burst, sends leave ``RING_LINGER`` apart."""
    return group_commit(
        "sync rings", lambda: GroupCommit(_send_sync_rings, linger=RING_LINGER)
    )


class _Handoff:
    """Rings handed from any thread to the ring loop's batcher.

    The batcher (a :class:`GroupCommit` lingering ``RING_LINGER`` in a burst)
    decides what travels together. Handing a ring over only appends it to a
    queue; the loop is woken when the queue was empty, and while rings keep
    coming it takes the queue every ``RING_LINGER`` on its own, so a burst
    wakes it once per batch, not once per ring.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.queue: list[TaskRecord] = []
        self.awake = False  # the loop takes the queue without being woken

    def put(self, task: TaskRecord) -> None:
        with self.lock:
            self.queue.append(task)
            if self.awake:
                return
            self.awake = True
        self.loop.call_soon_threadsafe(self.take)

    def take(self) -> None:
        """Hand the queued rings to the batcher (in the ring loop)."""
        with self.lock:
            tasks, self.queue = self.queue, []
            self.awake = bool(tasks)
        if tasks:
            batcher = _sync_rings()
            for task in tasks:
                batcher.submit(task)
            self.loop.call_later(RING_LINGER, self.take)

    async def drained(self) -> None:
        """Return once every ring handed over so far has been sent or failed."""
        while True:
            with self.lock:
                queued = bool(self.queue)
            if queued:
                self.take()
            await _sync_rings().wait()
            with self.lock:
                if not self.queue:
                    return


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


_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop, _Handoff] | None = None


def _ring_loop() -> asyncio.AbstractEventLoop:
    """The private, long-lived loop of this process (a forked child starts its
    own): ``async_to_sync`` would make a new loop, and with it a new Redis
    connection pool, for every ring."""
    return _started()[1]


def _handoff() -> _Handoff:
    return _started()[2]


def _started() -> tuple[int, asyncio.AbstractEventLoop, _Handoff]:
    global _loop
    found = _loop
    if found is not None and found[0] == os.getpid():
        return found
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="retrying-consumers-ring", daemon=True
            ).start()
            _loop = (os.getpid(), loop, _Handoff(loop))
        return _loop


atexit.register(flush)
