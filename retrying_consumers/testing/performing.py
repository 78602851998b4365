"""Run one task through its consumer and its policy, in this process, at once.

:func:`perform` stores a task as ``enqueue`` would, then runs its attempts on
an instance of the consumer class through the worker's own code path: the
atomic claim, the handler under its time limit, the recorded outcome and the
policy's decision (``decide_retry``, ``on_retry``, ``on_give_up``, signals).
Only the waits are skipped: a retry runs as soon as the previous attempt is
recorded, so a task with ``max_attempts=5`` that always fails runs five times
and ends dead, in milliseconds.

No channel layer is needed (see :mod:`retrying_consumers.eager`): a test
needs no Redis, and never reaches a shared one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async

from ..core.conf import library_settings
from ..core.payload import validate_payload
from ..models import Status
from ..producing.validation import owner_id as user_pk
from ..producing.validation import validate_address, validate_max_attempts
from ..running.eager import arun_stored, check_not_atomic
from ..storage import store

#: The channel a performed task is stored under, unless given.
DEFAULT_CHANNEL = "testing"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a performed task ended, as stored.

    ``status`` is ``"succeeded"``, ``"dead"`` or ``"cancelled"``; ``attempts``
    is the number of attempts run; ``result`` the stored return value (if the
    consumer stores results); ``error_class`` and ``error_message`` describe the
    last failed attempt (empty if none failed); ``reason`` says why the task
    ended dead or cancelled.
    """

    task_id: uuid.UUID
    status: str
    attempts: int
    result: Any
    error_class: str
    error_message: str
    reason: str

    @property
    def succeeded(self) -> bool:
        """Whether the task ended succeeded."""
        return self.status == str(Status.SUCCEEDED)


def perform(
    consumer_class: type,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    channel: str = DEFAULT_CHANNEL,
    max_attempts: int | None = None,
    user: Any = None,
) -> Outcome:
    """Store a task, run all its attempts on ``consumer_class``, return how it ended.

    Arguments are checked as :func:`~retrying_consumers.enqueue` checks them
    (but ``channel`` need not be routed). Call it from sync code; from async
    code, use :func:`aperform`. The test needs a database it really commits
    to, ``django_db(transaction=True)``: the attempts run through Channels'
    ``database_sync_to_async``, which closes a connection held in a
    transaction, as Channels documents for its own tests.
    """
    check_not_atomic()
    return async_to_sync(aperform)(
        consumer_class,
        type,
        payload,
        channel=channel,
        max_attempts=max_attempts,
        user=user,
    )


async def aperform(
    consumer_class: type,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    channel: str = DEFAULT_CHANNEL,
    max_attempts: int | None = None,
    user: Any = None,
) -> Outcome:
    """Async twin of :func:`perform` (the test needs ``transaction=True``)."""
    await sync_to_async(check_not_atomic)()
    validate_address(channel, type)
    payload = {} if payload is None else payload
    validate_payload(payload, max_bytes=library_settings().max_payload_bytes)
    validate_max_attempts(max_attempts)
    owner = await database_sync_to_async(user_pk)(user)
    task, _ = await database_sync_to_async(store.create_task)(
        channel=channel,
        type=type,
        payload=payload,
        ring_timeout=library_settings().ring_timeout,
        max_attempts=max_attempts,
        owner_id=owner,
    )
    task = await arun_stored(consumer_class, task)
    return Outcome(
        task_id=task.id,
        status=str(task.status),
        attempts=task.attempt,
        result=task.result,
        error_class=task.error_class,
        error_message=task.error_message,
        reason=task.reason,
    )
