"""Recording how an attempt ended: decided by the consumer, written once, kept
until the store takes it.

An outcome that cannot be written because the store is away is held in memory
and written again with backoff until the store is back (the attempt's lease is
renewed meanwhile, so nobody takes the task as lost). The outage is logged once
when it starts and once when it ends (see :mod:`retrying_consumers.health`).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..core.conf import library_settings, worker_id
from ..core.exceptions import AttemptInterrupted, AttemptTimedOut, InvalidPayload
from ..core.payload import validate_payload
from ..core.policy import Action, Decision, RetryPolicy
from ..messaging.batching import GroupCommit, in_database
from ..models import Outcome, TaskRecord
from ..storage import store
from ..storage.health import is_outage, store_health
from ..storage.sql import Success
from .outcomes import announce_failure, announce_success

logger = logging.getLogger("retrying_consumers.consumers")

#: Seconds before an outcome the store refused is written again, doubling to
#: ``MAX_WRITE_BACKOFF``.
FIRST_WRITE_BACKOFF = 0.1
MAX_WRITE_BACKOFF = 5.0


class NoHandler(Exception):
    """A task's message type has no handler method on the consumer."""


def task_policy(policy: RetryPolicy, task: TaskRecord) -> RetryPolicy:
    """The policy with the task's own cap on attempts (set at enqueue or re-drive)."""
    allowed = (task.max_attempts or 0) - task.drive_offset
    if allowed >= 1 and allowed != policy.max_attempts:
        return policy.with_options(max_attempts=allowed)
    return policy


async def record_success(consumer: Any, task: TaskRecord, result: Any) -> None:
    """Store the attempt's success (and its result, if kept) and announce it."""
    keep = consumer.stores_result(task.type)
    stored = _storable_result(task, result) if keep else None
    item = (Success(task.id, task.attempt, stored), task)
    done = await write_outcome(_successes(worker_id()), item, task, "success")
    if done is not None:
        await announce_success(type(consumer), done, stored)


async def record_failure(
    consumer: Any, task: TaskRecord, error: BaseException, policy: RetryPolicy
) -> None:
    """Store the failed attempt with the consumer's decision, then announce it."""
    failure = store.Failure(
        outcome=_outcome_of(error),
        error_class=type(error).__qualname__,
        error_message=str(error),
        traceback="".join(traceback.format_exception(error)),
    )
    if isinstance(error, NoHandler):
        decision = Decision(Action.GIVE_UP, None, str(error))
    else:
        decision = decide(consumer, task, error, task_policy(policy, task))
    item = store.FailedAttempt(task.id, task.attempt, failure, decision)
    done = await write_outcome(_failures(worker_id()), item, task, "failure")
    if done is not None:
        await announce_failure(type(consumer), done, error, decision, hooks=consumer)


def _outcome_of(error: BaseException) -> str:
    if isinstance(error, AttemptTimedOut):
        return str(Outcome.TIMED_OUT)
    if isinstance(error, AttemptInterrupted):
        return str(Outcome.INTERRUPTED)
    return str(Outcome.FAILED)


async def write_outcome[T](
    write: Callable[[T], Awaitable[TaskRecord | None]],
    item: T,
    task: TaskRecord,
    what: str,
) -> TaskRecord | None:
    """``write(item)`` until the store takes it; the stored task, or None.

    None when the attempt was no longer this worker's to record (cancelled, or
    its lease taken over), or when the store refused it for a reason that
    waiting will not change (logged at CRITICAL; the lease then expires and the
    attempt counts as lost).
    """
    delay = FIRST_WRITE_BACKOFF
    while True:
        try:
            done = await write(item)
        except Exception as err:
            if not is_outage(err):
                logger.critical(
                    "could not record the %s: task_id=%s attempt=%s",
                    what,
                    task.id,
                    task.attempt,
                    exc_info=True,
                    extra={"task_id": str(task.id)},
                )
                return None
            store_health.failed(f"record {what}", err)
            await asyncio.sleep(delay)
            # Written well within a lease once the store is back.
            cap = min(MAX_WRITE_BACKOFF, library_settings().lease_seconds / 3)
            delay = min(delay * 2, cap)
            continue
        store_health.succeeded()
        if done is None:
            _not_recorded(what, task)
        return done


def _successes(worker: str) -> GroupCommit[tuple[Success, TaskRecord], Any]:
    """This loop's batcher of success records."""
    return in_database(("succeed", worker), partial(store.succeed_many, worker=worker))


def _failures(worker: str) -> GroupCommit[store.FailedAttempt, Any]:
    """This loop's batcher of failure records."""
    return in_database(("fail", worker), partial(store.fail_many, worker=worker))


def decide(
    consumer: Any, task: TaskRecord, error: BaseException, policy: RetryPolicy
) -> Decision:
    """``consumer.decide_retry``, or the policy's decision if that hook fails."""
    try:
        decision = consumer.decide_retry(task, error, policy)
        if not isinstance(decision, Decision):
            raise TypeError(f"decide_retry returned {decision!r}, not a Decision")
        return decision
    except asyncio.CancelledError:
        raise
    except BaseException:
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
    limit = library_settings().max_payload_bytes
    try:
        validate_payload({"result": result}, "result", max_bytes=limit)
    except InvalidPayload as err:
        logger.warning(
            "result not stored: task_id=%s %s",
            task.id,
            err,
            extra={"task_id": str(task.id)},
        )
        return None
    return result
