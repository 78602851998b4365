"""Live task events on channel-layer groups, for the page and other listeners.

Each change of a task is sent as ``{"type": "task.update", "task": {...}}`` to the
task's own group, to its owner's group and to the group of all tasks. Delivery is
best effort (``group_send`` may drop); the store keeps the truth, so a listener
that subscribes or reconnects reads a snapshot from it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.layers import get_channel_layer

from .models import TaskRecord

logger = logging.getLogger("retrying_consumers.events")

ALL_TASKS_GROUP = "rc-tasks-all"


def task_group(task_id: uuid.UUID | str) -> str:
    """The group that hears every update of one task."""
    return f"rc-task-{task_id}"


def user_group(user_id: int) -> str:
    """The group that hears every update of one user's tasks."""
    return f"rc-tasks-user-{user_id}"


def groups_for(task: TaskRecord) -> list[str]:
    groups = [task_group(task.id), ALL_TASKS_GROUP]
    if task.owner_id is not None:
        groups.append(user_group(task.owner_id))
    return groups


async def apublish(task: TaskRecord, event: dict[str, Any] | None = None) -> None:
    """Send the task's current state to its groups at once; never raises."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "task.update", "task": event or task.to_event()}
    groups = groups_for(task)
    results = await asyncio.gather(
        *(layer.group_send(group, message) for group in groups),
        return_exceptions=True,
    )
    for group, result in zip(groups, results, strict=True):
        if isinstance(result, Exception):  # the store holds the truth
            logger.warning(
                "task event not sent: task_id=%s group=%s error=%s",
                task.id,
                group,
                f"{type(result).__name__}: {result}",
                extra={"task_id": str(task.id)},
            )
