"""Telling every open page about changes made by people (sync code).

Workers publish what they do to tasks; enqueue, cancel, retry and delete from
the page or the bulk actions happen in request threads, and are published here
so that every tab watching agrees. Best effort like every task event: the store
holds the truth, and a page that reconnects reads it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from retrying_consumers.live import events
from retrying_consumers.models import TaskRecord

logger = logging.getLogger("realtime.live")


def deleted_event(task: TaskRecord) -> dict[str, Any]:
    """The event for a deleted task: pages drop its row."""
    return {
        "id": str(task.id),
        "status": "deleted",
        "deleted": True,
        "channel": task.channel,
        "type": task.type,
        "owner_id": task.owner_id,
    }


def announce(tasks: Iterable[TaskRecord], *, deleted: bool = False) -> None:
    """Publish the current state of ``tasks`` (or their deletion); never raises."""
    items = [(task, deleted_event(task) if deleted else None) for task in tasks]
    if not items:
        return

    async def send() -> None:
        for task, event in items:
            events.publish(task, event)
        await events.flush()

    try:
        async_to_sync(send)()
    except Exception as err:  # the store holds the truth
        logger.warning("task events not sent: tasks=%s error=%r", len(items), err)


def announce_ids(ids: Iterable[Any]) -> None:
    """:func:`announce` for tasks by id, read from the store now."""
    announce(TaskRecord.objects.filter(pk__in=list(ids)))
