"""Run one task through its consumer and its policy, in this process, at once.

:func:`perform` stores a task as ``enqueue`` would, then runs its attempts on
an instance of the consumer class through the worker's own code path: the
atomic claim, the handler under its time limit, the recorded outcome and the
policy's decision (``decide_retry``, ``on_retry``, ``on_give_up``, signals).
Only the waits are skipped: a retry runs as soon as the previous attempt is
recorded, so a task with ``max_attempts=5`` that always fails runs five times
and ends dead, in milliseconds.

No channel layer is needed. No ring is sent (the attempts are run directly),
no retry timer is set, and while the task runs ``CHANNEL_LAYERS`` points at
Channels' in-memory layer, so the live progress and state events the attempts
publish go nowhere: a test needs no Redis, and never reaches a shared one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from .. import events, store
from ..attempts import run_task
from ..conf import library_settings
from ..doorbell import ring_message
from ..models import Status, TaskRecord
from ..payload import validate_payload
from ..producer import _owner_id, validate_address, validate_max_attempts
from ..scheduling import rings_scheduled_elsewhere
from ..writers import write_turn

#: The layers in force while :func:`perform` runs a task.
IN_MEMORY_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

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
    _check_not_atomic()
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
    await sync_to_async(_check_not_atomic)()
    validate_address(channel, type)
    payload = {} if payload is None else payload
    validate_payload(payload, max_bytes=library_settings().max_payload_bytes)
    validate_max_attempts(max_attempts)
    owner_id = await database_sync_to_async(_owner_id)(user)
    token = rings_scheduled_elsewhere.set(True)
    try:
        with override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYERS):
            task, _ = await database_sync_to_async(store.create_task)(
                channel=channel,
                type=type,
                payload=payload,
                ring_timeout=library_settings().ring_timeout,
                max_attempts=max_attempts,
                owner_id=owner_id,
            )
            consumer = await _consumer(consumer_class, channel)
            task = await _run_attempts(consumer, task)
            await events.flush()
    finally:
        rings_scheduled_elsewhere.reset(token)
    return Outcome(
        task_id=task.id,
        status=str(task.status),
        attempts=task.attempt,
        result=task.result,
        error_class=task.error_class,
        error_message=task.error_message,
        reason=task.reason,
    )


def _check_not_atomic() -> None:
    if connection.in_atomic_block:
        raise RuntimeError(
            "perform() cannot run inside a transaction: mark the test "
            "@pytest.mark.django_db(transaction=True) (or use TransactionTestCase)"
        )


async def _consumer(consumer_class: type, channel: str) -> Any:
    """An instance of ``consumer_class`` set up as a worker's would be."""
    consumer = consumer_class()
    consumer.scope = {"type": "channel", "channel": channel}
    layer = get_channel_layer(getattr(consumer, "channel_layer_alias", "default"))
    consumer.channel_layer = layer
    consumer.channel_name = await layer.new_channel() if layer is not None else None
    return consumer


async def _run_attempts(consumer: Any, task: TaskRecord) -> TaskRecord:
    """Run attempt after attempt until the task has ended; return it as stored."""
    while not task.is_final:
        attempt = task.attempt
        await run_task(consumer, ring_message(task))
        task = await database_sync_to_async(_due_now)(task.id)
        if task.attempt == attempt and not task.is_final:
            raise RuntimeError(
                f"attempt {attempt + 1} of task {task.id} was not run: the task "
                f"is {task.status} (is a worker running it too?)"
            )
    return task


def _due_now(task_id: uuid.UUID) -> TaskRecord:
    """The task as stored, with a retry it waits for made due now."""
    now = timezone.now()
    with write_turn():
        TaskRecord.objects.filter(pk=task_id, status=Status.RETRYING).update(
            due_at=now, updated_at=now
        )
    return store.get_task(task_id)
