"""A worker that takes only what it can run, survives bad messages and stops cleanly.

It replaces Channels' ``Worker`` under ``manage.py runworker``:

- **Bounded prefetch.** A message is taken from the channel layer only when one
  of ``concurrency`` slots is free, so an idle worker is never starved by a busy
  one hoarding messages in memory.
- **Poison messages** (no ``type``, an undecodable body, an unrouted channel) are
  logged once and dropped; the other channels keep running.
- **Scheduler.** Every process rings due retries and lost rings, takes back
  attempts whose lease expired, and enqueues the due ticks of periodic tasks;
  the store decides which process does each.
- **Due retries first.** A retry that falls due in this process takes the next
  free slot of its channel, ahead of the rings waiting in the channel. If no slot
  of that channel frees up here for ``DUE_HOLD`` seconds (long attempts hold
  them all), the retry is rung to the channel instead, for any worker; so is a
  retry of a channel idle here, whose listener waits with its last slot.
- **Graceful shutdown** on SIGTERM or SIGINT: stop taking messages, give the
  attempts in flight ``grace_period`` seconds, then cancel them (they are handed
  back as interrupted) and exit 0. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async

from ..core.conf import library_settings, worker_id
from ..live import events
from ..messaging import revoking
from ..messaging.doorbell import RINGS_TYPE, aring_again, aring_many
from ..models import TaskRecord
from ..recurring.ticking import apurge_old_ticks, atick, declared
from ..storage import followups
from ..storage.health import is_outage, store_health
from ..storage.retention import ResultExpiry, apurge_expired
from .instances import ConsumerInstance, is_connection_error
from .intake import check_channel_layer, is_undecodable, poison, refusal, usable_rings
from .recovery import arecover_lost
from .registry import register, unregister
from .routes import (
    channel_limit,
    channel_routes,
    channels_result_expiries,
    consumer_for,
    retrying_channels,
)
from .scheduling import aring_due, aring_if_due, ring_soon, serve_due_retries

logger = logging.getLogger("retrying_consumers.worker")

MAX_BACKOFF = 5.0
#: Seconds a listener waits before taking from a channel that had more rings
#: than free slots last time (a few milliseconds: slots of short tasks free up).
BACKLOG_PAUSE = 0.005
#: Seconds a retry fallen due here waits without any slot of its channel
#: freeing up, before it is rung to the channel instead, for any worker.
DUE_HOLD = 0.2


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker process behaves (seconds unless stated)."""

    #: Messages run at once by this process, across all its channels.
    concurrency: int = 4
    #: Time the attempts in flight get to finish after SIGTERM/SIGINT.
    grace_period: float = 30.0
    #: How often this process looks for due and lost tasks.
    scheduler_interval: float = 1.0
    #: How often this process writes its registry heartbeat.
    heartbeat_interval: float = 5.0


@dataclass(slots=True)
class _DueRetry:
    """A retry fallen due in this process, waiting for a free slot."""

    task_id: uuid.UUID
    ring: dict[str, Any]
    expiry: asyncio.TimerHandle | None = field(default=None)


class RetryingWorker:
    """Serve ``channels`` from ``channel_layer`` with ``application``."""

    def __init__(
        self,
        application: Any,
        channels: list[str],
        channel_layer: Any,
        config: WorkerConfig | None = None,
    ) -> None:
        self.application = application
        self.channels = list(channels)
        self.channel_layer = channel_layer
        self.config = config or WorkerConfig()
        self.routes = channel_routes(application)
        self.inflight: dict[asyncio.Future[None], str | None] = {}
        self.pools: dict[str, list[ConsumerInstance]] = {c: [] for c in self.channels}
        # Instances whose message is done, the last freed last: each takes its
        # next message from here, without a look at the whole pool.
        self.idle: dict[str, list[ConsumerInstance]] = {c: [] for c in self.channels}
        self.signals_seen = 0
        self.backlogged: set[str] = set()
        self.due: dict[str, deque[_DueRetry]] = {c: deque() for c in self.channels}
        # When an attempt of each channel last ended here.
        self.freed_at: dict[str, float] = {}
        # Channels whose listener waits for a message, holding a slot for it.
        self.receiving: set[str] = set()
        # Attempts running now, by channel.
        self.running: dict[str, int] = dict.fromkeys(self.channels, 0)

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        asyncio.run(self.main())

    async def main(self) -> None:
        self.stopping = asyncio.Event()
        self.slots = asyncio.Semaphore(self.config.concurrency)
        self.channel_slots = {
            c: asyncio.Semaphore(self._channel_limit(c)) for c in self.channels
        }
        await check_channel_layer(self.channel_layer)
        self.handle_signals(asyncio.get_running_loop())
        await database_sync_to_async(self._register)()
        listeners = [asyncio.create_task(self._listen(c)) for c in self.channels]
        serve_due_retries(self)
        chores = [
            asyncio.create_task(
                self._every(self.config.scheduler_interval, self._schedule)
            ),
            asyncio.create_task(
                self._every(self.config.heartbeat_interval, self._beat)
            ),
        ]
        if hasattr(self.channel_layer, "group_add"):
            chores.append(asyncio.create_task(revoking.listen(self.channel_layer)))
        if declared():  # a loop that touches no store would hide its outages
            chores.append(
                asyncio.create_task(
                    self._every(self.config.scheduler_interval, self._tick)
                )
            )
        logger.info(
            "worker started: worker=%s channels=%s concurrency=%s",
            worker_id(),
            ",".join(self.channels),
            self.config.concurrency,
        )
        await self.stopping.wait()
        serve_due_retries(None)
        for job in listeners + chores:
            job.cancel()
        await asyncio.gather(*listeners, *chores, return_exceptions=True)
        await self._ring_held_retries()
        await self._drain()
        await events.flush()  # the last outcomes' events
        await database_sync_to_async(self._unregister)()
        logger.info("worker stopped: worker=%s", worker_id())

    def handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called as the worker starts: SIGTERM and SIGINT stop it gracefully.

        Override to do nothing for a worker in a thread other than the main
        one, which cannot handle signals; set ``stopping`` to stop it.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.signals_seen += 1
        name = signal.Signals(signum).name
        if self.signals_seen == 1:
            logger.info(
                "%s: no new messages; %s attempt(s) in flight get %g s to finish",
                name,
                len(self.inflight),
                self.config.grace_period,
            )
            self.stopping.set()
        else:
            logger.warning("%s again: interrupting the attempts in flight", name)
            self._interrupt()

    async def _drain(self) -> None:
        if self.inflight:
            _, pending = await asyncio.wait(
                set(self.inflight), timeout=self.config.grace_period
            )
            if pending:
                logger.warning(
                    "grace period over: interrupting %s attempt(s)", len(pending)
                )
                self._interrupt()
        runners = [i.runner for pool in self.pools.values() for i in pool]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    def _interrupt(self) -> None:
        for pool in self.pools.values():
            for instance in pool:
                if not instance.idle:
                    instance.runner.cancel()

    async def run_due(
        self, task_id: uuid.UUID, channel: str, ring: dict[str, Any]
    ) -> bool:
        """Run a retry fallen due in this process ahead of the channel's rings.

        It starts now if a slot is free, else takes the next slot of its
        channel to free up. False if this process does not serve ``channel``,
        or if no slot would free up: nothing of the channel runs here, and its
        listener waits for a message with the last slot; rung, the retry
        reaches that listener at once.
        """
        if self.stopping.is_set() or channel not in self.due:
            return False
        if await self._try_acquire(channel):
            if not self._dispatch(channel, ring):
                self._release(channel)
            return True
        if channel in self.receiving and not self.running[channel]:
            return False
        held = _DueRetry(task_id, ring)
        held.expiry = asyncio.get_running_loop().call_later(
            DUE_HOLD, self._due_expired, channel, held
        )
        self.due[channel].append(held)
        return True

    def _run_held_retry(self, channel: str) -> bool:
        """Give the slots just taken or freed on ``channel`` to a held retry."""
        while self.due[channel]:
            held = self.due[channel].popleft()
            if held.expiry is not None:
                held.expiry.cancel()
            if self._dispatch(channel, held.ring):
                return True
        return False

    def _due_expired(self, channel: str, held: _DueRetry) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self.freed_at.get(channel, -math.inf) < DUE_HOLD:
            # Slots keep freeing up here, each to the retry held longest.
            held.expiry = loop.call_later(DUE_HOLD, self._due_expired, channel, held)
            return
        # No slot freed up in time: let whichever worker is free run it.
        self.due[channel].remove(held)
        ring_soon(held.task_id)

    async def _ring_held_retries(self) -> None:
        held = [h for queue in self.due.values() for h in queue]
        for queue in self.due.values():
            queue.clear()
        for h in held:
            if h.expiry is not None:
                h.expiry.cancel()
        await asyncio.gather(*(aring_if_due(h.task_id) for h in held))

    async def _listen(self, channel: str) -> None:
        backoff = 0.1
        while True:
            await self._acquire(channel)
            if self._run_held_retry(channel):
                continue
            try:
                if channel in self.backlogged:
                    # Rings wait in the channel: let a few more slots free up,
                    # so that the next message is taken in bigger bites.
                    self.backlogged.discard(channel)
                    await asyncio.sleep(BACKLOG_PAUSE)
                    if self._run_held_retry(channel):
                        continue
                self.receiving.add(channel)
                try:
                    message = await self.channel_layer.receive(channel)
                finally:
                    self.receiving.discard(channel)
            except asyncio.CancelledError:
                self._release(channel)
                raise
            except Exception as err:
                self._release(channel)
                error = f"{type(err).__name__}: {err}"
                if is_undecodable(err):
                    poison(channel, f"undecodable message ({error})")
                    continue
                if is_connection_error(err):
                    logger.warning(
                        "channel layer unreachable, retrying in %.1f s: %s",
                        backoff,
                        error,
                    )
                else:
                    logger.error(
                        "receive from channel %s failed, retrying in %.1f s: %s",
                        channel,
                        backoff,
                        error,
                    )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = 0.1
            await self._take(channel, message)

    async def _take(self, channel: str, message: Any) -> None:
        """Run what ``message`` asks for; one slot is already held for it.

        A batch of rings takes as many more slots as are free right now and
        sends the rest back to the channel, for this or another worker: holding
        them here would starve an idle worker.
        """
        rings = usable_rings(channel, message)
        if not rings:
            self._release(channel)
            return
        taken = 1
        while taken < len(rings) and await self._try_acquire(channel):
            taken += 1
        if len(rings) > taken:
            self.backlogged.add(channel)
            await self._give_back(channel, rings[taken:])
        for ring in rings[:taken]:
            if not self._dispatch(channel, ring):
                self._release(channel)

    async def _give_back(self, channel: str, rings: list[Any]) -> None:
        try:
            await aring_again(channel, rings, self.channel_layer)
        except Exception as err:
            # Refused ones are due again (see aring_again); rings lost
            # otherwise wait until the store rings them again.
            logger.warning(
                "could not hand back %s ring(s) to channel %s; the store will ring "
                "them again: %s",
                len(rings),
                channel,
                f"{type(err).__name__}: {err}",
            )

    def _dispatch(self, channel: str, message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            poison(channel, "message with no type", message)
            return False
        if message["type"] == RINGS_TYPE:
            poison(channel, "malformed batch of rings", message)
            return False
        if self.routes is not None and channel not in self.routes:
            poison(channel, "no consumer is routed to this channel", message)
            return False
        route = (self.routes or {}).get(channel)
        consumer_class = getattr(route, "consumer_class", None)
        if problem := refusal(consumer_class, message):
            poison(channel, problem, message)
            return False
        instance = self._idle_instance(channel)
        done = instance.submit(message)
        self.running[channel] += 1
        task_id = message.get("task_id")
        self.inflight[done] = str(task_id) if task_id is not None else None
        done.add_done_callback(lambda _: self._finished(done, channel, instance))
        return True

    def _idle_instance(self, channel: str) -> ConsumerInstance:
        """An idle consumer instance of ``channel``: the last one freed, or new."""
        idle = self.idle[channel]
        while idle:
            instance = idle.pop()
            if instance.idle:
                return instance
        # None is free: a new one (and the pool loses the crashed ones).
        pool = [i for i in self.pools[channel] if not i.runner.done()]
        instance = ConsumerInstance(self.application, channel)
        pool.append(instance)
        self.pools[channel] = pool
        return instance

    def _finished(
        self, done: asyncio.Future[None], channel: str, instance: ConsumerInstance
    ) -> None:
        self.inflight.pop(done, None)
        self.running[channel] -= 1
        if instance.idle:
            self.idle[channel].append(instance)
        self.freed_at[channel] = asyncio.get_running_loop().time()
        if self.stopping.is_set() or not self._run_held_retry(channel):
            self._release(channel)

    async def _acquire(self, channel: str) -> None:
        """Wait for a slot of the channel's consumer, then one of the process."""
        await self.channel_slots[channel].acquire()
        try:
            await self.slots.acquire()
        except BaseException:
            self.channel_slots[channel].release()
            raise

    async def _try_acquire(self, channel: str) -> bool:
        """Take both slots if both are free now, without waiting."""
        if self.channel_slots[channel].locked() or self.slots.locked():
            return False
        # An unlocked semaphore is acquired without a pause: nothing between.
        await self.channel_slots[channel].acquire()
        await self.slots.acquire()
        return True

    def _release(self, channel: str) -> None:
        self.slots.release()
        self.channel_slots[channel].release()

    def _channel_limit(self, channel: str) -> int:
        return channel_limit(self.routes, channel, self.config.concurrency)

    async def _every(self, interval: float, chore: Callable[[], Any]) -> None:
        while True:
            try:
                wait = await chore()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if is_outage(err):
                    store_health.failed(chore.__name__.strip("_"), err)
                else:
                    logger.exception(
                        "worker chore %s failed; trying again", chore.__name__
                    )
            else:
                store_health.succeeded()
                if isinstance(wait, float):  # the chore knows when it is due
                    await asyncio.sleep(wait)
                    continue
            # Jitter keeps many processes from scanning the store in lock-step.
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))

    async def _schedule(self) -> None:
        await aring_due()
        if store_health.settling(library_settings().lease_seconds):
            pass  # live workers first renew the leases that lapsed meanwhile
        elif self.routes is None:
            await arecover_lost(self._consumer_for)
        elif recoverable := self._retrying_channels():
            await arecover_lost(self._consumer_for, channels=recoverable)
        await aring_many(await followups.asweep(library_settings().ring_timeout))
        # Rate-limited in retention: once a minute.
        await apurge_expired(self._result_expiries())
        await apurge_expired()  # rate-limited in retention: once a minute
        await apurge_old_ticks()  # rate-limited: every 10 minutes

    async def _tick(self) -> float:
        """Enqueue the periodic tasks due; wake again at the next tick."""
        return await atick(self.config.scheduler_interval)

    def _retrying_channels(self) -> list[str]:
        return retrying_channels(self.routes, self.channels)

    def _result_expiries(self) -> list[ResultExpiry]:
        return channels_result_expiries(self.routes, self.channels)

    def _consumer_for(self, task: TaskRecord) -> Any:
        return consumer_for(self.routes, task)

    async def _beat(self) -> None:
        await database_sync_to_async(self._register)()

    def _register(self) -> None:
        running = sorted(t for t in self.inflight.values() if t)
        register(self.channels, self.config.concurrency, running)

    def _unregister(self) -> None:
        unregister()


# Their names here before they moved to instances and routes.
_Instance = ConsumerInstance
_is_connection_error = is_connection_error
_channel_routes = channel_routes
