"""Ringing: telling a worker channel that a task's attempt is ready to run.

A ring carries only the task id and attempt number; the store holds the rest.
Rings sent together travel as one message of ``RINGS_TYPE`` (the worker splits
it again, and takes only what it has room for). A ring that fails loses
nothing: the task stays queued with a ``due_at``, and the scheduler rings it
again. A ring refused with ``ChannelFull`` makes its task due at once, so that
the scheduler rings it again as soon as the channel has room (see
:func:`aroom`), not after ``RING_TIMEOUT``; Redis down, it waits that long.

Rings leave a tenth of a channel's capacity (``HEADROOM``) to the rings that
workers send back, which would otherwise be refused in a full channel. A
channel found full is left alone for a pause that doubles while it stays full
(:class:`FullChannels`): meanwhile its rings are refused here, without asking
Redis, and their tasks made due for the scheduler.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from ..core.exceptions import TaskNotFound
from ..models import TaskRecord
from ..storage import store
from .batching import GroupCommit, group_commit, in_database
from .capacity import FULL_PAUSE_MAX as FULL_PAUSE_MAX
from .capacity import FULL_PAUSE_MIN as FULL_PAUSE_MIN
from .capacity import HEADROOM as HEADROOM
from .capacity import FullChannels as FullChannels
from .capacity import counts_messages, spare_messages
from .capacity import full_channels as full_channels

logger = logging.getLogger("retrying_consumers.doorbell")

#: Seconds a synchronous ring may take before the task is left to be rung again.
SYNC_RING_TIMEOUT = 10.0
#: The ``type`` of a message that carries several rings.
RINGS_TYPE = "retrying_consumers.rings"
#: Rings sent in one message at most.
MAX_RINGS_PER_MESSAGE = 50
#: Rings one send of the ring loop takes at most (in messages of
#: ``MAX_RINGS_PER_MESSAGE``): a batch of ``enqueue_many`` leaves in a few
#: sends, not in sends of ``batching.MAX_BATCH`` that each wait ``RING_LINGER``.
MAX_RINGS_PER_SEND = 1000
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
    return await group_commit(
        "rings", lambda: GroupCommit(_send_ring_batch, max_batch=MAX_RINGS_PER_SEND)
    )(task)


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


def ring_many(tasks: Sequence[TaskRecord]) -> None:
    """:func:`ring` for each of ``tasks``, handed to the ring loop at once.

    The loop wakes once for all of them and sends them as few messages as
    :func:`ring` would (``MAX_RINGS_PER_MESSAGE`` rings each, per channel).
    """
    if tasks:
        _handoff().put_many(tasks)


async def aring_many(tasks: Sequence[TaskRecord]) -> list[bool]:
    """:func:`aring` for each of ``tasks``; they travel together."""
    return list(await asyncio.gather(*(aring(task) for task in tasks)))


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
        "sync rings",
        lambda: GroupCommit(
            _send_sync_rings, linger=RING_LINGER, max_batch=MAX_RINGS_PER_SEND
        ),
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
        self.put_many((task,))

    def put_many(self, tasks: Sequence[TaskRecord]) -> None:
        with self.lock:
            self.queue.extend(tasks)
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


async def aring_again(channel: str, rings: list[Any], layer: Any = None) -> None:
    """Send rings taken from ``channel`` back to it, as one message.

    For a worker that took a batch of more rings than it can run now. Raises
    what the channel layer raised, for the caller to log. Refused with
    ``ChannelFull``, their tasks are made due first: the scheduler rings them
    again as soon as the channel has room, not after ``RING_TIMEOUT``.
    """
    layer = layer if layer is not None else get_channel_layer()
    try:
        # Taking the batch made room: worth asking even if the channel was
        # full a moment ago, and the places rings leave free are for this.
        await _send(layer, channel, rings, None, pausing=False)
    except ChannelFull:
        await _make_due(rings)
        raise


async def _send_rings(
    channel: str,
    rings: list[Any],
    timeout: float | None = None,
) -> bool:
    """Send ``rings`` as one message; False (and a log line) if it failed."""
    layer = get_channel_layer()
    try:
        await _send(layer, channel, rings, timeout, pausing=True)
    except Exception as err:  # ChannelFull, connection errors: the store re-rings
        if isinstance(err, TimeoutError):
            err = TimeoutError(f"no answer within {timeout:g} s")
        _log_failure(channel, rings, err)
        if isinstance(err, ChannelFull):
            await _make_due(rings)
        return False
    return True


async def _send(
    layer: Any, channel: str, rings: list[Any], timeout: float | None, pausing: bool
) -> None:
    """Send ``rings`` as one message, unless the channel counts as full.

    With ``pausing``, a channel found full a moment ago is not asked, and one
    without a spare place short of ``HEADROOM`` counts as full.
    """
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    full = full_channels(layer)
    if pausing and full.paused(channel):
        raise ChannelFull("the channel was full a moment ago")
    try:
        async with asyncio.timeout(timeout):
            if pausing and await spare_messages(layer, channel) == 0:
                raise ChannelFull(
                    "the channel is full (its last places are kept for rings sent back)"
                )
            await layer.send(channel, batch_message(rings))
    except ChannelFull as err:
        full.found_full(channel)
        raise ChannelFull(str(err) or "the channel is full") from err
    full.found_room(channel)


def _log_failure(channel: str, rings: list[Any], err: Exception) -> None:
    ids = [str(_task_id_of(r)) for r in rings]
    logger.warning(
        "%s ring(s) failed, the store will ring again: channel=%s task_ids=%s error=%s",
        len(rings),
        channel,
        ",".join(ids[:10]) + (",..." if len(ids) > 10 else ""),
        f"{type(err).__name__}: {err}",
        extra={"channel": channel, "task_id": ids[0] if len(ids) == 1 else None},
    )


def _task_id_of(ring: Any) -> Any:
    return ring.get("task_id") if isinstance(ring, dict) else None


async def _make_due(rings: list[Any]) -> None:
    """Make the tasks of refused ``rings`` due now, for the scheduler to ring."""
    ids = []
    for ring in rings:
        try:
            ids.append(store.parse_task_id(_task_id_of(ring)))
        except TaskNotFound:
            continue  # not a ring of ours: nothing to ring again
    batcher = in_database("make due", _make_due_many)
    try:
        await asyncio.gather(*(batcher(task_id) for task_id in ids))
    except Exception as err:
        logger.warning(
            "could not make %s refused task(s) due now; they are rung again after "
            "RING_TIMEOUT: %s",
            len(ids),
            f"{type(err).__name__}: {err}",
        )


def _make_due_many(task_ids: list[uuid.UUID]) -> list[None]:
    store.make_due(task_ids)
    return [None] * len(task_ids)


async def aroom(channel: str) -> int | None:
    """How many rings ``channel`` takes now; None if the layer cannot tell.

    Its spare places (see :func:`.capacity.spare_messages`) times
    ``MAX_RINGS_PER_MESSAGE``. 0 without asking Redis while the channel is
    left alone (see :class:`FullChannels`), and a channel found full is left
    alone from then on.
    """
    layer = get_channel_layer()
    if layer is None or not counts_messages(layer):
        return None
    full = full_channels(layer)
    if full.paused(channel):
        return 0
    spare = await spare_messages(layer, channel)
    if spare == 0:
        full.found_full(channel)
    else:
        full.found_room(channel)
    return (spare or 0) * MAX_RINGS_PER_MESSAGE


_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop, _Handoff] | None = None


def _ring_loop() -> asyncio.AbstractEventLoop:
    """The private, long-lived loop of this process (a forked child starts its
    own): ``async_to_sync`` would make a new loop, and with it a new Redis
    connection pool, for every ring."""
    return _started()[1]


def in_ring_loop[T](coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coroutine`` in this process's ring loop, from any thread."""
    return asyncio.run_coroutine_threadsafe(coroutine, _ring_loop())


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


# Their names here before they moved to capacity.
_spare_messages = spare_messages
_counts_messages = counts_messages
