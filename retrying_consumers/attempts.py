"""Running one attempt of a durable task inside a consumer.

claim -> run under a lease and a time limit -> record the outcome -> announce it.
Every step that changes state is a conditional update in the store, so duplicate
rings and late outcomes change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer

from . import signals, store
from .batching import GroupCommit, in_database
from .conf import library_settings, worker_id
from .events import apublish
from .exceptions import AttemptTimedOut, InvalidPayload, TaskNotFound
from .models import Outcome, TaskRecord
from .outcomes import announce_failure, announce_success, send_signal
from .payload import validate_payload
from .policy import Action, Decision, RetryPolicy
from .progress import ProgressReporter, current_reporter
from .sql import ClaimRequest, Success

logger = logging.getLogger("retrying_consumers.consumers")


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task a handler is running, as ``self.task`` inside the handler."""

    id: str
    channel: str
    type: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]


current_task: ContextVar[TaskContext | None] = ContextVar(
    "retrying_consumers_task", default=None
)


class NoHandler(Exception):
    """A task's message type has no handler method on the consumer."""


RUNNING_EVENT_DELAY = 0.05


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


def task_policy(policy: RetryPolicy, task: TaskRecord) -> RetryPolicy:
    """The policy with the task's own cap on attempts (set at enqueue or re-drive)."""
    allowed = (task.max_attempts or 0) - task.drive_offset
    if allowed >= 1 and allowed != policy.max_attempts:
        return policy.with_options(max_attempts=allowed)
    return policy


async def run_task(consumer: Any, message: dict[str, Any]) -> None:
    """Claim the attempt a ring names and run it; drop duplicates quietly."""
    task_id, attempt = message.get("task_id"), message.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        _dead_letter("malformed task message", message)
        return
    policy = consumer.get_retry_policy(str(message.get("type")))
    try:
        request = ClaimRequest(
            store.parse_task_id(task_id), attempt, policy.max_attempts
        )
        task = await _claims(worker_id(), library_settings().lease_seconds)(request)
    except TaskNotFound:
        _dead_letter("message for unknown task", message)
        return
    if task is None:
        logger.debug(
            "duplicate or stale ring ignored: task_id=%s attempt=%s",
            task_id,
            attempt,
            extra={"task_id": str(task_id)},
        )
        return
    await run_claimed(consumer, task, policy)


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
    """Run a claimed attempt and record what happened."""
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
    sender = type(consumer)
    await send_signal(signals.task_started, sender, task=task, attempt=task.attempt)
    reporter = ProgressReporter(task, lib.progress_interval)
    context = TaskContext(
        str(task.id),
        task.channel,
        task.type,
        task.attempt,
        task.max_attempts or policy.max_attempts,
        task.payload,
    )
    heartbeat = Heartbeat(task, lib.lease_seconds, policy)
    task_token = current_task.set(context)
    progress_token = current_reporter.set(reporter)
    try:
        result = await _run_handler(consumer, task, policy)
    except asyncio.CancelledError:
        await asyncio.shield(_interrupted(task, reporter))
        raise
    except StopConsumer:
        raise
    except Exception as err:
        await running_event.settle()
        await reporter.close()
        await _record_failure(consumer, task, err, policy)
        return
    finally:
        heartbeat.cancel()
        running_event.timer.cancel()
        current_task.reset(task_token)
        current_reporter.reset(progress_token)
    await running_event.settle()
    await reporter.close()
    await _record_success(consumer, task, result)


async def _run_handler(consumer: Any, task: TaskRecord, policy: RetryPolicy) -> Any:
    handler = getattr(consumer, task.type.replace(".", "_"), None)
    if handler is None or task.type.startswith("_"):
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
        result = await database_sync_to_async(handler)(message)
        if limit is not None and time.monotonic() - started > limit:
            # A thread cannot be stopped; its late result is not trusted.
            raise AttemptTimedOut(f"attempt ran past its time limit of {limit:g} s")
        return result
    timeout = asyncio.timeout(limit)
    try:
        async with timeout:
            return await handler(message)
    except TimeoutError:
        if timeout.expired():
            raise AttemptTimedOut(
                f"attempt was cancelled at its time limit of {limit:g} s"
            ) from None
        raise


class Heartbeat:
    """Renew the attempt's lease every third of it, until the attempt ends, or
    until its time limit has passed.

    A handler that hangs past its limit (a thread cannot be killed) stops being
    renewed, so its lease expires and the scheduler takes the task back. The
    renewals start from a timer: most attempts end before the first one, and a
    timer costs less to set and cancel than a task.
    """

    def __init__(
        self, task: TaskRecord, lease_seconds: float, policy: RetryPolicy
    ) -> None:
        self.interval = lease_seconds / 3
        self.deadline = None
        if policy.time_limit is not None:
            self.deadline = time.monotonic() + policy.time_limit + self.interval
        self.job: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(
            self.interval, self._start, task, lease_seconds
        )

    def _start(self, task: TaskRecord, lease_seconds: float) -> None:
        self.job = asyncio.get_running_loop().create_task(
            self._renew(task, lease_seconds)
        )

    def cancel(self) -> None:
        self.timer.cancel()
        if self.job is not None:
            self.job.cancel()

    async def _renew(self, task: TaskRecord, lease_seconds: float) -> None:
        me = worker_id()
        while True:
            try:
                kept = await store.aextend_lease(
                    task.id, task.attempt, worker=me, lease_seconds=lease_seconds
                )
            except Exception:
                logger.warning(
                    "lease renewal failed: task_id=%s", task.id, exc_info=True
                )
            else:
                if not kept:
                    logger.warning(
                        "lease lost (task cancelled or taken over): "
                        "task_id=%s attempt=%s",
                        task.id,
                        task.attempt,
                        extra={"task_id": str(task.id)},
                    )
                    return
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return
            await asyncio.sleep(self.interval)


async def _interrupted(task: TaskRecord, reporter: ProgressReporter) -> None:
    """The worker is stopping: hand the task back without using up an attempt."""
    try:
        await reporter.close()
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


async def _record_success(consumer: Any, task: TaskRecord, result: Any) -> None:
    keep = consumer.stores_result(task.type)
    stored = _storable_result(task, result) if keep else None
    done = await _successes(worker_id())((Success(task.id, task.attempt, stored), task))
    if done is None:
        _not_recorded("outcome", task)
        return
    await announce_success(type(consumer), done, stored)


async def _record_failure(
    consumer: Any, task: TaskRecord, error: Exception, policy: RetryPolicy
) -> None:
    timed_out = isinstance(error, AttemptTimedOut)
    failure = store.Failure(
        outcome=str(Outcome.TIMED_OUT if timed_out else Outcome.FAILED),
        error_class=type(error).__qualname__,
        error_message=str(error),
        traceback="".join(traceback.format_exception(error)),
    )
    if isinstance(error, NoHandler):
        decision = Decision(Action.GIVE_UP, None, str(error))
    else:
        decision = decide(consumer, task, error, task_policy(policy, task))
    item = store.FailedAttempt(task.id, task.attempt, failure, decision)
    done = await _failures(worker_id())(item)
    if done is None:
        _not_recorded("failure", task)
        return
    await announce_failure(type(consumer), done, error, decision, hooks=consumer)


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


def _successes(worker: str) -> GroupCommit[tuple[Success, TaskRecord], Any]:
    """This loop's batcher of success records."""
    return in_database(("succeed", worker), partial(store.succeed_many, worker=worker))


def _failures(worker: str) -> GroupCommit[store.FailedAttempt, Any]:
    """This loop's batcher of failure records."""
    return in_database(("fail", worker), partial(store.fail_many, worker=worker))


def decide(
    consumer: Any, task: TaskRecord, error: Exception, policy: RetryPolicy
) -> Decision:
    """``consumer.decide_retry``, or the policy's decision if that hook fails."""
    try:
        decision = consumer.decide_retry(task, error, policy)
        if not isinstance(decision, Decision):
            raise TypeError(f"decide_retry returned {decision!r}, not a Decision")
        return decision
    except Exception:
        logger.critical(
            "decide_retry raised; the policy decides instead: task_id=%s",
            task.id,
            exc_info=True,
            extra={"task_id": str(task.id)},
        )
        return policy.decide(error, store.attempt_state(task, datetime.now(UTC)))


def _not_recorded(what: str, task: TaskRecord) -> None:
    logger.warning(
        "%s not recorded, the task was cancelled or its lease lost: "
        "task_id=%s attempt=%s",
        what,
        task.id,
        task.attempt,
        extra={"task_id": str(task.id)},
    )


def _storable_result(task: TaskRecord, result: Any) -> Any:
    try:
        validate_payload({"result": result}, "result")
    except InvalidPayload as err:
        logger.warning(
            "result not stored, it is not JSON safe: task_id=%s %s",
            task.id,
            err,
            extra={"task_id": str(task.id)},
        )
        return None
    return result
