"""Running a stored task's attempts at once, in this process: eager mode.

Used by :func:`retrying_consumers.testing.perform` and by ``ChannelsBackend``'s
``EAGER`` option. Each attempt goes through the worker's own code path: the
atomic claim, the handler under its time limit, the recorded outcome and the
consumer's decision. Only the waits are skipped: a retry runs as soon as the
attempt before it is recorded.

No channel layer is needed. No ring is sent (the attempts are run directly),
no retry timer is set, and while the attempts run ``CHANNEL_LAYERS`` points
at Channels' in-memory layer, so the live progress and state events they
publish go nowhere rather than to a Redis that may not be there.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone

from ..live import events
from ..messaging.doorbell import ring_message
from ..models import Status, TaskRecord
from ..storage import store
from ..storage.writers import write_turn
from .attempts import run_task
from .scheduling import rings_scheduled_elsewhere

#: The layers in force while attempts run eagerly.
IN_MEMORY_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class AttemptNotRun(RuntimeError):
    """An attempt that eager mode rang could not be claimed (a worker took it)."""


def check_not_atomic() -> None:
    """Raise RuntimeError in a transaction, where running attempts would fail.

    Attempts run through Channels' ``database_sync_to_async``, which closes a
    connection held in a transaction, as Channels documents for its tests.
    """
    if connection.in_atomic_block:
        raise RuntimeError(
            "perform() cannot run inside a transaction: mark the test "
            "@pytest.mark.django_db(transaction=True) (or use TransactionTestCase)"
        )


async def arun_stored(consumer_class: type, task: TaskRecord) -> TaskRecord:
    """Run the attempts of stored ``task`` on ``consumer_class`` until it ends.

    Returns the task as stored then. Sets no retry timer and sends to no
    configured channel layer (see the module's docstring).
    """
    # Imported here: django.test brings unittest, xml.dom and the test client
    # with it (2.4 MB of a worker's memory that only eager runs need).
    from django.test import override_settings

    await sync_to_async(check_not_atomic)()
    token = rings_scheduled_elsewhere.set(True)
    try:
        with override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYERS):
            consumer = await _consumer(consumer_class, task.channel)
            task = await _run_attempts(consumer, task)
            await events.flush()
    finally:
        rings_scheduled_elsewhere.reset(token)
    return task


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
            raise AttemptNotRun(
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
