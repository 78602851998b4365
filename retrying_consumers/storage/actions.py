"""What people do to a task: retry it now, cancel it.

:mod:`.producer` and :mod:`.audit` call these with the ring and the record of
who did it; here is only the change of the row, conditional like every other.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from ..models import ACTIVE, AttemptRecord, Outcome, Status, TaskRecord
from .rows import as_uuid, get_task
from .sweeps import take_ring
from .writers import writing


def retry_now(
    task_id: uuid.UUID | str, *, ring_timeout: float, reason: str = ""
) -> TaskRecord:
    """Make a waiting, dead or cancelled task due now.

    A dead or cancelled task starts a new drive: its policy's full budget of
    attempts, counted from now. A queued or retrying task is simply made due.
    Either way the old reason (why it died, or why it was waiting) no longer
    holds: it is replaced by ``reason`` ("retried by ada at ..."), or cleared.
    Raises :class:`TaskNotFound`, or ``ValueError`` for a running or succeeded task.
    """
    now = timezone.now()
    task = get_task(task_id)
    if task.status in (Status.RUNNING, Status.SUCCEEDED):
        raise ValueError(f"task {task.id} is {task.status}; it cannot be retried now")
    rows = TaskRecord.objects.filter(
        pk=task.pk, status=task.status, attempt=task.attempt
    )
    changes: dict[str, Any] = {
        "status": Status.QUEUED,
        "due_at": now,
        "updated_at": now,
        "reason": reason[:500],
    }
    if task.status in (Status.DEAD, Status.CANCELLED):
        changes.update(
            drive_offset=task.attempt,
            drive_started_at=None,
            max_attempts=task.attempt + task.attempt_budget
            if task.attempt_budget
            else None,
            finished_at=None,
        )
    try:
        with writing():
            changed = rows.update(**changes)
    except IntegrityError:
        raise ValueError(
            f"task {task.id} cannot be re-driven: a newer task has its idempotency "
            f"key {task.idempotency_key!r}"
        ) from None
    if not changed:
        # Changed meanwhile: look again.
        return retry_now(task_id, ring_timeout=ring_timeout, reason=reason)
    return take_ring(task.pk, ring_timeout=ring_timeout) or get_task(task.pk)


def cancel(task_id: uuid.UUID | str, *, reason: str = "cancelled") -> TaskRecord:
    """End an unfinished task as cancelled; a finished one is returned unchanged.

    A running attempt is recorded as cancelled and its lease released, in the
    same transaction; see :func:`cancel_running` for stopping it.
    """
    return cancel_running(task_id, reason=reason)[0]


def cancel_running(
    task_id: uuid.UUID | str, *, reason: str = "cancelled"
) -> tuple[TaskRecord, bool]:
    """:func:`cancel`, and whether an attempt was running when it was cancelled
    (its worker is then to be told to stop it: :mod:`.revoking`)."""
    now = timezone.now()
    pk = as_uuid(task_id)
    with writing():
        before = TaskRecord.objects.filter(pk=pk).values_list("status", flat=True)
        was_running = before.first() == Status.RUNNING
        changed = TaskRecord.objects.filter(pk=pk, status__in=ACTIVE).update(
            status=Status.CANCELLED,
            reason=reason[:500],
            finished_at=now,
            updated_at=now,
            due_at=None,
            lease_owner="",
            lease_expires_at=None,
        )
        if changed:
            AttemptRecord.objects.filter(
                task_id=pk, outcome=Outcome.RUNNING, finished_at=None
            ).update(outcome=Outcome.CANCELLED, finished_at=now, error_message=reason)
    return get_task(task_id), bool(changed) and was_running
