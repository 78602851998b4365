"""Live task events on channel-layer groups, for the page and other listeners.

Each change of a task goes to the task's own group, to its owner's group and to
the group of all tasks, as ``{"type": "task.updates", "group": name, "tasks":
[...]}``: the events published together in one process (in a burst, within
``LINGER``) travel together, one message per group, with only the latest event
of each task (see :mod:`retrying_consumers.batching`). With channels-redis,
groups that nobody has joined are skipped after one pipelined look at their
sizes, so a busy worker with no one watching sends almost nothing.

Delivery is best effort (``group_send`` may drop); the store keeps the truth, so
a listener that subscribes or reconnects reads a snapshot from it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.layers import get_channel_layer

from ..messaging.batching import GroupCommit, group_commit
from ..models import TaskRecord

logger = logging.getLogger("retrying_consumers.events")

ALL_TASKS_GROUP = "rc-tasks-all"
#: The ``type`` of the group messages: a handler ``task_updates`` receives them.
EVENT_TYPE = "task.updates"
#: Seconds an event waits for others to travel with it when events come in a
#: burst (a lone event leaves at once). Browsers see updates at most every
#: 0.1 s anyway; a busy worker sends one batch per few tasks.
LINGER = 0.005


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
    """Send the task's current state to its groups; never raises.

    Returns once the batch it joined has been handed to the channel layer.
    """
    await publish(task, event)


def publish(
    task: TaskRecord, event: dict[str, Any] | None = None
) -> asyncio.Future[None]:
    """:func:`apublish` without waiting (call it in the event loop).

    Events leave in the order they were published. The future is done once the
    event's batch has been handed to the channel layer; see :func:`flush`.
    """
    return _publisher().submit((groups_for(task), event or task.to_event()))


async def flush() -> None:
    """Wait until the events published so far in this loop have been sent."""
    await _publisher().wait()


def _publisher() -> GroupCommit[tuple[list[str], dict[str, Any]], None]:
    return group_commit("events", lambda: GroupCommit(_send_events, linger=LINGER))


async def _send_events(
    items: list[tuple[list[str], dict[str, Any]]],
) -> list[Exception | None]:
    layer = get_channel_layer()
    if layer is None:
        return [None] * len(items)
    by_group: dict[str, dict[str, dict[str, Any]]] = {}
    for groups, event in items:
        for group in groups:
            latest = by_group.setdefault(group, {})
            latest.pop(event["id"], None)  # the latest goes last
            latest[event["id"]] = event
    groups = await _listened(layer, list(by_group))
    results = await asyncio.gather(
        *(
            layer.group_send(
                group,
                {
                    "type": EVENT_TYPE,
                    "group": group,
                    "tasks": list(by_group[group].values()),
                },
            )
            for group in groups
        ),
        return_exceptions=True,
    )
    for group, result in zip(groups, results, strict=True):
        if isinstance(result, Exception):  # the store holds the truth
            logger.warning(
                "task events not sent: group=%s tasks=%s error=%s",
                group,
                len(by_group[group]),
                f"{type(result).__name__}: {result}",
            )
    return [None] * len(items)


async def _listened(layer: Any, groups: list[str]) -> list[str]:
    """The groups that may have members: with channels-redis, the non-empty ones.

    One pipelined ZCARD per Redis host instead of a ``group_send`` (two round
    trips) per group. Members whose membership expired still count; the
    ``group_send`` that follows discards them as usual. Any doubt, any error,
    any other layer: every group.
    """
    group_key = getattr(layer, "_group_key", None)
    if group_key is None or not hasattr(layer, "consistent_hash"):
        return groups
    by_host: dict[int, list[str]] = {}
    for group in groups:
        by_host.setdefault(layer.consistent_hash(group), []).append(group)
    listened: list[str] = []
    for index, host_groups in by_host.items():
        try:
            pipe = layer.connection(index).pipeline(transaction=False)
            for group in host_groups:
                pipe.zcard(group_key(group))
            sizes = await pipe.execute()
        except Exception:
            listened += host_groups  # group_send reports what is wrong
            continue
        listened += [g for g, size in zip(host_groups, sizes, strict=True) if size]
    return listened
