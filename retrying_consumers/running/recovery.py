"""Taking back attempts whose worker was lost (SIGKILL, crash, lost host).

A running attempt whose lease has expired is recorded as failed with reason
"worker lost", and the task goes on by its consumer's policy: retried, or dead if
it keeps killing workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async

from ..core.exceptions import WorkerLost
from ..core.policy import RetryPolicy
from ..models import Outcome, TaskRecord
from ..storage import store
from .outcomes import announce_failure
from .recording import decide, task_policy

logger = logging.getLogger("retrying_consumers.scheduler")

#: Makes an instance of the consumer serving a task (its policy, decide_retry and
#: hooks apply); None if no consumer is known for the task's channel.
ConsumerLookup = Callable[[TaskRecord], Any]


async def arecover_lost(
    find_consumer: ConsumerLookup,
    limit: int = 100,
    channels: Sequence[str] | None = None,
) -> int:
    """Record every expired lease as a lost worker; return how many this call took.

    With ``channels``, only tasks of those channels: a worker recovers only the
    tasks whose consumer it has, so that the consumer's own policy, decision
    and hooks apply. A task whose channel no live worker serves waits, like
    its queued peers, for one that does.
    """
    expired = await database_sync_to_async(store.expired_lease_ids)(limit, channels)
    taken = 0
    for task_id, attempt in expired:
        taken += await _recover(task_id, attempt, find_consumer)
    return taken


async def _recover(
    task_id: object, attempt: int, find_consumer: ConsumerLookup
) -> bool:
    task = await store.aget_task(str(task_id))
    consumer = find_consumer(task)
    if not hasattr(consumer, "decide_retry"):
        consumer = None  # not a RetryMixin consumer: the default policy applies
    policy = consumer.get_retry_policy(task.type) if consumer else RetryPolicy()
    error = WorkerLost(
        f"worker {task.lease_owner or '?'} stopped renewing its lease (worker lost)"
    )
    failure = store.Failure(
        outcome=str(Outcome.WORKER_LOST),
        error_class="WorkerLost",
        error_message=str(error),
    )
    policy = task_policy(policy, task)
    if consumer is not None:
        decision = decide(consumer, task, error, policy)
    else:
        decision = policy.decide(error, store.attempt_state(task, datetime.now(UTC)))
    done = await store.afail(
        task.id, attempt, worker=None, failure=failure, decision=decision
    )
    if done is None:
        return False  # another scheduler took it, or the worker came back
    sender = type(consumer) if consumer is not None else object
    await announce_failure(sender, done, error, decision, hooks=consumer)
    return True
