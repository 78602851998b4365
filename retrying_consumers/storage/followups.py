"""Follow-up tasks: chains (``then=`` of one task) and groups (``enqueue_group``).

A task enqueued with ``then=[...]`` carries its follow-ups in its own row,
written by the same INSERT, so no crash can separate them. When it succeeds,
its follow-ups are enqueued, each with ``parent_id`` and ``parent_result`` in
its payload, in one transaction that also marks the parent as followed up: they
are enqueued once, whoever gets there first.

``enqueue_group`` writes its tasks and a :class:`TaskGroup` row in one
transaction. Once every task of the group has ended (succeeded, dead or
cancelled), the group's follow-up is enqueued, once, with each task's id,
status and result in its payload.

The worker that records an outcome fires what it completes at once; every
worker's scheduler also looks for what is due (``sweep``), so an outcome
recorded by a cancel, by recovery, or just before a crash still fires.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Exists, OuterRef
from django.utils import timezone

from ..core.exceptions import InvalidArgument, InvalidPayload
from ..models import ACTIVE, Status, TaskGroup, TaskRecord
from . import sql
from .writers import writing

logger = logging.getLogger("retrying_consumers.followups")

#: Payload keys the library sets on a follow-up of one task.
PARENT_KEYS = ("parent_id", "parent_result")
#: Payload keys the library sets on a group's follow-up.
GROUP_KEYS = ("group_id", "results")
#: Follow-ups fired per look of a scheduler, of each kind.
SWEEP_LIMIT = 100


def spec(value: Any, where: str, reserved: Sequence[str], check: Any) -> dict[str, Any]:
    """A checked follow-up: ``(channel, type[, payload])`` or a dict of those.

    ``check(channel, type, payload)`` validates it as ``enqueue`` would.
    """
    if isinstance(value, dict):
        unknown = set(value) - {"channel", "type", "payload"}
        if unknown:
            raise InvalidArgument(where, f"unknown keys {sorted(unknown)}")
        parts = (value.get("channel"), value.get("type"), value.get("payload"))
    elif isinstance(value, tuple | list) and len(value) in (2, 3):
        parts = (value[0], value[1], value[2] if len(value) == 3 else None)
    else:
        raise InvalidArgument(
            where, "must be (channel, type), (channel, type, payload) or a dict"
        )
    channel, type, payload = parts
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise InvalidArgument(where, "its payload must be a dict")
    if taken := sorted(set(payload) & set(reserved)):
        raise InvalidArgument(
            where, f"its payload must not use {taken}: the library sets them"
        )
    try:
        check(channel, type, payload)
    except InvalidArgument as err:
        raise InvalidArgument(where, str(err)) from None
    except InvalidPayload as err:
        raise InvalidPayload(f"{where}: {err.path}", err.problem) from None
    return {"channel": channel, "type": type, "payload": payload}


def _child(
    then: dict[str, Any], extra: dict[str, Any], owner_id: int | None, ring: float
) -> TaskRecord:
    return TaskRecord(
        channel=then["channel"],
        type=then["type"],
        payload={**then["payload"], **extra},
        owner_id=owner_id,
        due_at=timezone.now() + timedelta(seconds=ring),
    )


def fire_task(task_id: uuid.UUID, ring_timeout: float) -> list[TaskRecord]:
    """Enqueue the follow-ups of a succeeded task, once; return them."""
    with writing():
        marked = TaskRecord.objects.filter(
            pk=task_id,
            status=Status.SUCCEEDED,
            followed_up=False,
            followups__isnull=False,
        ).update(followed_up=True)
        if not marked:
            return []
        parent = TaskRecord.objects.get(pk=task_id)
        extra = {"parent_id": str(parent.pk), "parent_result": parent.result}
        children = [
            _child(then, extra, parent.owner_id, ring_timeout)
            for then in parent.followups or []
        ]
        for child in children:
            child.parent_id = parent.pk
        sql.insert_tasks(children)
    return children


def fire_group(group_id: uuid.UUID, ring_timeout: float) -> list[TaskRecord]:
    """Enqueue a group's follow-up once all its tasks have ended; return it."""
    with writing():
        if TaskRecord.objects.filter(group_id=group_id, status__in=ACTIVE).exists():
            return []
        now = timezone.now()
        if not TaskGroup.objects.filter(pk=group_id, fired_at=None).update(
            fired_at=now
        ):
            return []
        group = TaskGroup.objects.get(pk=group_id)
        found = {
            str(pk): (status, result)
            for pk, status, result in TaskRecord.objects.filter(
                group_id=group_id
            ).values_list("pk", "status", "result")
        }
        ended = [
            (member, *found.get(member, ("gone", None))) for member in group.members
        ]
        results = [
            {"task_id": member, "status": status, "result": result}
            for member, status, result in ended
        ]
        child = _child(
            group.then,
            {"group_id": str(group.pk), "results": results},
            group.owner_id,
            ring_timeout,
        )
        child.parent_id = group.pk
        sql.insert_tasks([child])
        TaskGroup.objects.filter(pk=group_id).update(callback_id=child.pk)
    return [child]


def due(limit: int = SWEEP_LIMIT) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Succeeded tasks whose follow-ups wait, and groups that have ended."""
    tasks = list(
        TaskRecord.objects.filter(
            status=Status.SUCCEEDED, followups__isnull=False, followed_up=False
        )
        .order_by("finished_at")
        .values_list("pk", flat=True)[:limit]
    )
    active = TaskRecord.objects.filter(group_id=OuterRef("pk"), status__in=ACTIVE)
    groups = list(
        TaskGroup.objects.filter(fired_at=None)
        .exclude(Exists(active))
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    return tasks, groups


def sweep(ring_timeout: float) -> list[TaskRecord]:
    """Fire what is due; return the tasks enqueued, to be rung."""
    tasks, groups = due()
    made = []
    for task_id in tasks:
        made += fire_task(task_id, ring_timeout)
    for group_id in groups:
        made += fire_group(group_id, ring_timeout)
    if made:
        logger.info("follow-up tasks enqueued: count=%s", len(made))
    return made


def fire_after(task: TaskRecord, ring_timeout: float) -> list[TaskRecord]:
    """What the outcome of ``task`` completes: its follow-ups, its group's."""
    made = []
    if task.followups:
        made += fire_task(task.pk, ring_timeout)
    if task.group_id is not None:
        made += fire_group(task.group_id, ring_timeout)
    return made


afire_after = database_sync_to_async(fire_after)
asweep = database_sync_to_async(sweep)
