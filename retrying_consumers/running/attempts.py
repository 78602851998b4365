"""Running one attempt of a durable task inside a consumer.

claim -> run under a lease and a time limit -> record the outcome -> announce it.
Every step that changes state is a conditional update in the store, so duplicate
rings and late outcomes change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.utils import timezone

from .. import signals
from ..core.conf import library_settings, worker_id
from ..core.exceptions import (
    AttemptCancelled,
    AttemptInterrupted,
    AttemptTimedOut,
    TaskNotFound,
)
from ..core.policy import RetryPolicy
from ..live.events import apublish
from ..live.progress import ProgressReporter, current_reporter
from ..messaging.batching import GroupCommit, in_database
from ..messaging.doorbell import aring_many
from ..messaging.revoking import revocable
from ..models import TaskRecord
from ..storage import followups, store
from ..storage.health import is_outage, store_health
from ..storage.limits import Deferred, claim_limited, is_limited, waiting_ids
from ..storage.sql import ClaimRequest
from .context import TaskContext as TaskContext
from .context import current_task as current_task
from .context import is_cancelled as is_cancelled
from .handlers import find_handler
from .leases import Heartbeat as Heartbeat
from .outcomes import send_signal
from .recording import NoHandler, record_failure, record_success
from .scheduling import aring_if_due, ring_at

logger = logging.getLogger("retrying_consumers.consumers")


RUNNING_EVENT_DELAY = 0.05
#: Interruptions by stopping workers that a task's drive gets for free; the
#: next ones count as attempts.
FREE_INTERRUPTIONS = 3
#: Attempt numbers fit the store's integer columns.
MAX_ATTEMPT_NUMBER = 2**31 - 1


class DelayedPublish:
    """Publish a running task's state after a delay, unless it has ended by then."""

    def __init__(self, task: TaskRecord, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.job: asyncio.Task[None] | None = None
        self.timer = loop.call_later(delay, self._start, task)

    def _start(self, task: TaskRecord) -> None:
        self.job = asyncio.get_running_loop().create_task(apublish(task))

    async def settle(self) -> None:
        """Cancel the publish, or wait for it: it must not land after the outcome."""
        self.timer.cancel()
        if self.job is not None:
            await asyncio.shield(self.job)


async def run_task(consumer: Any, message: dict[str, Any]) -> None:
    """Claim the attempt a ring names and run it; drop duplicates quietly."""
    task_id, attempt = message.get("task_id"), message.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        _dead_letter("malformed task message", message)
        return
    if not 1 <= attempt <= MAX_ATTEMPT_NUMBER:
        _dead_letter("malformed task message", message)
        return
    type = str(message.get("type"))
    policy = consumer.get_retry_policy(type)
    channel = consumer.scope.get("channel")
    channel = channel if isinstance(channel, str) else ""
    if is_limited(policy):
        await _run_limited(consumer, task_id, attempt, type, policy, message, channel)
        return
    task = await _claim(task_id, attempt, policy, message, channel)
    if task is None:
        return
    await run_claimed(consumer, task, policy)


async def _run_limited(
    consumer: Any,
    task_id: Any,
    attempt: int,
    type: str,
    policy: RetryPolicy,
    message: dict[str, Any],
    channel: str,
) -> None:
    """Claim within the type's cluster-wide limits; run; wake the next waiter."""
    lib = library_settings()
    claim = partial(
        claim_limited,
        worker=worker_id(),
        lease_seconds=lib.lease_seconds,
        ring_timeout=lib.ring_timeout,
    )
    try:
        request = ClaimRequest(
            store.parse_task_id(task_id), attempt, policy.max_attempts, channel
        )
        claimed = await database_sync_to_async(claim)(request, type, policy)
        while isinstance(claimed, Deferred) and claimed.brief:
            wait = (claimed.until - timezone.now()).total_seconds()
            await asyncio.sleep(max(0.0, wait))
            claimed = await database_sync_to_async(claim)(request, type, policy)
    except TaskNotFound:
        _dead_letter("message for unknown task", message)
        return
    except Exception as err:
        _claim_failed(task_id, attempt, err)
        return
    store_health.succeeded()
    if isinstance(claimed, Deferred):
        logger.debug(
            "attempt held back by a limit: task_id=%s type=%s (%s) until %s",
            task_id,
            type,
            claimed.why,
            claimed.until.isoformat(),
            extra={"task_id": str(task_id)},
        )
        if policy.rate_limit is not None and policy.max_running is None:
            ring_at(claimed.task_id, claimed.until)  # its slot of the rate
        return
    if claimed is None:
        return
    try:
        await run_claimed(consumer, claimed, policy)
    finally:
        if policy.max_running is not None:
            await _awake_next(claimed.channel, type)


async def _awake_next(channel: str, type: str) -> None:
    """An attempt of a type limited in how many run has ended: ring the next."""
    try:
        ids = await database_sync_to_async(waiting_ids)(channel, type, 1)
        for task_id in ids:
            await aring_if_due(task_id)
    except Exception as err:  # the scheduler rings it RING_TIMEOUT later
        _left_to_scheduler(f"the next {type} task", err)


def _left_to_scheduler(what: str, err: Exception) -> None:
    """A step the scheduler's look will redo: an outage is counted with the
    others (logged once), anything else logged here."""
    if is_outage(err):
        store_health.failed(what, err)
    else:
        logger.warning("%s left to the scheduler: %r", what, err)


async def _claim(
    task_id: Any,
    attempt: int,
    policy: RetryPolicy,
    message: dict[str, Any],
    channel: str,
) -> TaskRecord | None:
    """The claimed task, or None (logged) if this ring runs nothing."""
    try:
        request = ClaimRequest(
            store.parse_task_id(task_id), attempt, policy.max_attempts, channel
        )
        task = await _claims(worker_id(), library_settings().lease_seconds)(request)
    except TaskNotFound:
        _dead_letter("message for unknown task", message)
        return None
    except Exception as err:
        _claim_failed(task_id, attempt, err)
        return None
    store_health.succeeded()
    if task is None:
        logger.debug(
            "duplicate or stale ring ignored: task_id=%s attempt=%s",
            task_id,
            attempt,
            extra={"task_id": str(task_id)},
        )
    return task


def _claim_failed(task_id: Any, attempt: int, err: Exception) -> None:
    if not is_outage(err):
        logger.critical(
            "could not claim: task_id=%s attempt=%s",
            task_id,
            attempt,
            exc_info=(type(err), err, err.__traceback__),
            extra={"task_id": str(task_id)},
        )
    else:
        # The task stays queued; the scheduler rings it again.
        store_health.failed("claim", err)


def _dead_letter(what: str, message: dict[str, Any]) -> None:
    task_id = message.get("task_id")
    logger.error(
        "dead-lettered %s: task_id=%s attempt=%r type=%r",
        what,
        task_id,
        message.get("attempt"),
        message.get("type"),
        extra={"task_id": str(task_id), "outcome": "dead_letter"},
    )


async def run_claimed(consumer: Any, task: TaskRecord, policy: RetryPolicy) -> None:
    """Run a claimed attempt and record what happened.

    Whatever the handler raises, ``BaseException`` included, is recorded as a
    failed attempt and the policy decides; only the cancellation of a stopping
    worker hands the task back (see :func:`_interrupted`).
    """
    lib = library_settings()
    logger.debug(
        "attempt started: task_id=%s channel=%s type=%s attempt=%s/%s",
        task.id,
        task.channel,
        task.type,
        task.attempt,
        task.max_attempts,
        extra={"task_id": str(task.id)},
    )
    # A task that ends within RUNNING_EVENT_DELAY is announced once, finished:
    # half the group sends for short tasks, and nothing a person could see lost.
    running_event = DelayedPublish(task, RUNNING_EVENT_DELAY)
    await send_signal(
        signals.task_started, type(consumer), task=task, attempt=task.attempt
    )
    reporter = ProgressReporter(task, lib.progress_interval)
    heartbeat = Heartbeat(task, lib.lease_seconds, policy)
    try:
        result, error = await _run_in_context(consumer, task, policy, reporter)
        heartbeat.attempt_over()
        await running_event.settle()
        await reporter.close()
        if isinstance(error, AttemptCancelled):
            _stopped(task, error)
        elif error is None:
            await record_success(consumer, task, result)
        else:
            await record_failure(consumer, task, error, policy)
    finally:
        heartbeat.cancel()
        running_event.timer.cancel()
    if task.followups or task.group_id is not None:
        await _follow_up(task)
    if isinstance(error, StopConsumer):
        raise error  # recorded; the consumer instance stops as its handler asked


async def _run_in_context(
    consumer: Any, task: TaskRecord, policy: RetryPolicy, reporter: ProgressReporter
) -> tuple[Any, BaseException | None]:
    """Run the handler with ``self.task`` set: (result, None) or (None, error)."""
    context = TaskContext(
        str(task.id),
        task.channel,
        task.type,
        task.attempt,
        task.max_attempts or policy.max_attempts,
        task.payload,
    )
    task_token = current_task.set(context)
    progress_token = current_reporter.set(reporter)
    try:
        return await _run_handler(consumer, task, policy), None
    except asyncio.CancelledError as err:
        if not _being_cancelled():
            return None, err  # raised by the handler itself, not a stop
        await asyncio.shield(_interrupted(consumer, task, policy, reporter))
        raise
    except BaseException as err:
        return None, err
    finally:
        current_task.reset(task_token)
        current_reporter.reset(progress_token)


async def _follow_up(task: TaskRecord) -> None:
    """Enqueue and ring what this outcome completes (the scheduler's sweep
    does it later if this fails)."""
    try:
        made = await followups.afire_after(task, library_settings().ring_timeout)
        await aring_many(made)
    except Exception as err:
        _left_to_scheduler(f"follow-ups of task_id={task.id}", err)


def _stopped(task: TaskRecord, error: AttemptCancelled) -> None:
    """The store already has the outcome (the cancel wrote it): say so only."""
    logger.info(
        "attempt stopped: task_id=%s channel=%s type=%s attempt=%s (%s)",
        task.id,
        task.channel,
        task.type,
        task.attempt,
        error,
        extra={"task_id": str(task.id), "outcome": "cancelled"},
    )


def _being_cancelled() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


async def _run_handler(consumer: Any, task: TaskRecord, policy: RetryPolicy) -> Any:
    handler = find_handler(consumer, consumer.handler_type(task.type))
    if handler is None:
        raise NoHandler(
            f"{type(consumer).__qualname__} has no handler for {task.type!r}"
        )
    message = {
        "type": task.type,
        "task_id": str(task.id),
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "payload": task.payload,
    }
    limit = policy.time_limit
    if consumer._sync:
        started = time.monotonic()
        with revocable(str(task.id)) as revocation:
            result = await database_sync_to_async(handler)(message)
        if revocation.requested:
            raise AttemptCancelled(revocation.reason)  # its result is ignored
        if limit is not None and time.monotonic() - started > limit:
            # A thread cannot be stopped; its late result is not trusted.
            raise AttemptTimedOut(f"attempt ran past its time limit of {limit:g} s")
        return result
    timeout = asyncio.timeout(limit)
    with revocable(str(task.id), asyncio.current_task()) as revocation:
        try:
            async with timeout:
                result = await handler(message)
        except TimeoutError:
            if revocation.settle():
                raise AttemptCancelled(revocation.reason) from None
            if timeout.expired():
                raise AttemptTimedOut(
                    f"attempt was cancelled at its time limit of {limit:g} s"
                ) from None
            raise
        except asyncio.CancelledError:
            if revocation.settle() and not _being_cancelled():
                raise AttemptCancelled(revocation.reason) from None
            raise
        except BaseException:
            revocation.settle()
            raise
        if revocation.settle():
            raise AttemptCancelled(revocation.reason)  # its result is ignored
        return result


async def _interrupted(
    consumer: Any, task: TaskRecord, policy: RetryPolicy, reporter: ProgressReporter
) -> None:
    """The worker is stopping: hand the task back without using up an attempt.

    A task interrupted ``FREE_INTERRUPTIONS`` times already in this drive (it
    outlasts every grace period, or brings its worker down) is not handed back
    for free again: the interruption is recorded as a failed attempt, and the
    policy decides.
    """
    try:
        await reporter.close()
        if await store.ainterruptions(task) >= FREE_INTERRUPTIONS:
            error = AttemptInterrupted(
                f"the worker stopped before the attempt finished, "
                f"{FREE_INTERRUPTIONS + 1} times in a row"
            )
            await record_failure(consumer, task, error, policy)
            return
        done = await store.ainterrupt(task.id, task.attempt, worker=worker_id())
    except Exception:
        logger.exception("could not hand back interrupted task_id=%s", task.id)
        return
    if done is not None:
        logger.warning(
            "attempt interrupted by shutdown, task queued again: task_id=%s "
            "channel=%s type=%s attempt=%s/%s",
            task.id,
            task.channel,
            task.type,
            task.attempt,
            done.max_attempts,
            extra={"task_id": str(task.id), "outcome": "interrupted"},
        )
        await apublish(done)


def _claims(worker: str, lease_seconds: float) -> GroupCommit[ClaimRequest, Any]:
    """This loop's batcher of claims: concurrent claims share a transaction."""

    def hand_back(orphans: list[tuple[ClaimRequest, TaskRecord | None]]) -> None:
        # Claimed for attempts that were cancelled before they could start.
        for _, task in orphans:
            if task is not None:
                store.interrupt(task.id, task.attempt, worker=worker)

    return in_database(
        ("claim", worker, lease_seconds),
        partial(store.claim_many, worker=worker, lease_seconds=lease_seconds),
        hand_back,
    )
