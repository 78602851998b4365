"""The schedulers' side of the store: due tasks, their rings, expired leases.

Taking a ring is one conditional UPDATE (see :func:`.sql.take_rings`), so of
several schedulers that find a task due, one rings it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.utils import timezone

from ..models import Status, TaskRecord
from . import sql
from .rows import as_uuid, writing_rows
from .writers import write_turn


def take_ring(task_id: uuid.UUID | str, *, ring_timeout: float) -> TaskRecord | None:
    """Take the duty of ringing a due task; None if it is not due or taken.

    A retrying task becomes queued; either way its ``due_at`` moves on by
    ``ring_timeout``, so that if the message is lost the task is rung again.
    """
    [task] = take_rings([as_uuid(task_id)], ring_timeout=ring_timeout)
    return task


def take_rings(
    task_ids: Sequence[uuid.UUID], *, ring_timeout: float
) -> list[TaskRecord | None]:
    """:func:`take_ring` for several tasks in one UPDATE, in order."""
    with writing_rows():
        taken = sql.take_rings(task_ids, ring_timeout=ring_timeout, now=timezone.now())
    return [taken.pop(task_id, None) for task_id in task_ids]


def due_task_ids(limit: int = 100, channel: str | None = None) -> list[uuid.UUID]:
    """Queued or retrying tasks whose ``due_at`` has passed, oldest first.

    Only tasks of ``channel``, if given.
    """
    found = TaskRecord.objects.filter(
        status__in=[Status.QUEUED, Status.RETRYING], due_at__lte=timezone.now()
    )
    if channel is not None:
        found = found.filter(channel=channel)
    return list(found.order_by("due_at").values_list("pk", flat=True)[:limit])


def due_channels(scan: int = 10_000) -> list[str]:
    """The channels of the ``scan`` oldest tasks that :func:`due_task_ids` finds.

    Bounded, so that a backlog of millions costs each look no more than
    ``scan`` rows of the index.
    """
    oldest = TaskRecord.objects.filter(
        status__in=[Status.QUEUED, Status.RETRYING], due_at__lte=timezone.now()
    ).order_by("due_at")[:scan]
    return sorted(
        TaskRecord.objects.filter(pk__in=oldest.values("pk"))
        .order_by()
        .values_list("channel", flat=True)
        .distinct()
    )


def make_due(task_ids: Sequence[uuid.UUID]) -> int:
    """Make queued tasks due now; return how many were not due yet.

    For tasks whose ring the channel layer refused (``ChannelFull``): the next
    look of any scheduler rings them again, instead of one ``RING_TIMEOUT``
    later. A task claimed meanwhile is left alone; one rung twice is claimed
    once all the same.
    """
    now = timezone.now()
    with write_turn():
        return TaskRecord.objects.filter(
            pk__in=list(task_ids), status=Status.QUEUED, due_at__gt=now
        ).update(due_at=now, updated_at=now)


def expired_lease_ids(
    limit: int = 100, channels: Sequence[str] | None = None
) -> list[tuple[uuid.UUID, int]]:
    """Running tasks whose lease has expired: their worker was lost.

    Only tasks of ``channels``, if given.
    """
    found = TaskRecord.objects.filter(
        status=Status.RUNNING, lease_expires_at__lte=timezone.now()
    )
    if channels is not None:
        found = found.filter(channel__in=list(channels))
    return list(found.order_by("lease_expires_at").values_list("pk", "attempt")[:limit])
