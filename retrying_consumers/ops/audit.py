"""Who retried, cancelled or deleted a task, when, and from where.

The task page, the admin and ``manage.py tasks`` act on tasks through these
functions rather than the bare ``retry_now`` and ``cancel``: each does the same
thing, writes a :class:`~retrying_consumers.models.TaskAuditRecord` in the same
transaction, makes the task's stored reason say who did it, and tells the
task's listeners (the task page) at once, since no worker is involved yet.

The trail holds the task's id and the actor's name as text, so it survives the
task's deletion (and the user's).
"""

from __future__ import annotations

import asyncio
import copy
import getpass
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..core.exceptions import TaskNotFound
from ..live import events
from ..messaging.doorbell import _ring_loop
from ..models import Status, TaskAuditRecord, TaskRecord
from ..producing import producer
from ..storage.store import get_task
from ..storage.writers import writing

logger = logging.getLogger("retrying_consumers.audit")

REDRIVEN = (Status.DEAD, Status.CANCELLED)
#: Seconds an action waits for its event to reach the channel layer; the page
#: re-reads the store on reconnect anyway.
PUBLISH_TIMEOUT = 2.0


@dataclass(frozen=True)
class Actor:
    """Who acts, and where from: a user (or just a name) and a source."""

    user: Any | None = None
    name: str = ""
    source: str = "api"

    @classmethod
    def of(cls, user: Any, source: str) -> Actor:
        """The signed-in ``user`` acting from ``source`` ("page", "admin"...)."""
        if user is None or not getattr(user, "is_authenticated", False):
            return cls(None, "", source)
        return cls(user, user.get_username(), source)

    @classmethod
    def command_line(cls) -> Actor:
        """The operating-system user running a management command."""
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name in this environment
            name = ""
        return cls(None, name, "command")

    @property
    def label(self) -> str:
        """The name as shown in reasons: "ada", or "someone" when unknown."""
        return self.name or "someone"


def record(
    task_id: uuid.UUID | str,
    action: str,
    by: Actor,
    detail: str = "",
    at: datetime | None = None,
) -> TaskAuditRecord:
    """Store one entry of a task's trail and return it."""
    entry = TaskAuditRecord.objects.create(
        task_id=task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(task_id),
        action=action,
        actor=by.user,
        actor_name=by.name[:150],
        at=at or timezone.now(),
        source=by.source,
        detail=detail[:500],
    )
    logger.info(
        "task %s: task_id=%s actor=%s source=%s",
        action,
        entry.task_id,
        entry.actor_name,
        entry.source,
        extra={
            "task_id": str(entry.task_id),
            "action": action,
            "actor": entry.actor_name,
            "source": entry.source,
        },
    )
    return entry


def trail(task_id: uuid.UUID | str) -> QuerySet[TaskAuditRecord]:
    """Every entry of a task's trail, oldest first."""
    return TaskAuditRecord.objects.filter(task_id=task_id).order_by("at", "pk")


def retry_now(task_id: uuid.UUID | str, by: Actor) -> TaskRecord:
    """:func:`retrying_consumers.retry_now`, recorded.

    The stored reason becomes "retried by ada at 14:02:03 UTC" (or "re-driven
    by ..." for a dead or cancelled task), so that the reason a task died
    never stands beside its new attempts. Raises like ``retry_now``.
    """
    now = timezone.now()
    with writing():
        before = get_task(task_id)
        action = "redrive" if before.status in REDRIVEN else "retry"
        verb = "re-driven" if action == "redrive" else "retried"
        reason = f"{verb} by {by.label} at {stamp(now)}"
        task = producer.retry_now(task_id, reason=reason)
        detail = f"was {before.status} after attempt {before.attempt}"
        record(task.pk, action, by, detail, at=now)
        _announce(task)
    return task


def cancel(task_id: uuid.UUID | str, by: Actor, reason: str = "") -> TaskRecord:
    """:func:`retrying_consumers.cancel`, recorded if it cancelled the task.

    The stored reason is ``reason``, or "cancelled by ada at ...". A task that
    had already ended is returned unchanged, and nothing is recorded.
    """
    now = timezone.now()
    reason = reason or f"cancelled by {by.label} at {stamp(now)}"
    with writing():
        before = get_task(task_id)
        task = producer.cancel(task_id, reason)
        if before.is_final or task.status != Status.CANCELLED:
            return task
        detail = f"was {before.status} after attempt {before.attempt}"
        record(task.pk, "cancel", by, detail, at=now)
        _announce(task)
    return task


def delete(task_id: uuid.UUID | str, by: Actor) -> TaskRecord:
    """Delete a finished task and its attempts; its trail stays. Returns the
    deleted task.

    Raises :class:`TaskNotFound` if there is no such task, and ``ValueError``
    if it is unfinished (cancel it first: accepted work never vanishes).
    """
    from .deletion import delete_finished

    with writing():
        try:
            last = TaskRecord.objects.select_for_update().get(pk=task_id)
        except TaskRecord.DoesNotExist:
            raise TaskNotFound(f"no task with id {task_id}") from None
        outcome = delete_finished([last.pk], by=by)
    if outcome.unfinished:
        raise ValueError(f"Task {task_id} is not finished: cancel it first.")
    return last


def announce_deleted(task: TaskRecord) -> None:
    """Tell the task's open pages, once the deletion commits, that it is gone."""
    last = copy.copy(task)  # delete() forgets the primary key
    _announce(last, deleted=True)


def recorded(task: TaskRecord, by: Actor) -> TaskAuditRecord:
    """Record the deletion of ``task`` (for callers that delete it themselves)."""
    detail = f"was {task.status} after attempt {task.attempt}"
    return record(task.pk, "delete", by, detail)


def stamp(moment: datetime) -> str:
    """A time as reasons show it: "2026-12-03 14:02:03 UTC" (current time zone)."""
    local = timezone.localtime(moment)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def _announce(task: TaskRecord, deleted: bool = False) -> None:
    """Publish the task's new state once the change is committed; for a deleted
    task, its last state marked ``"deleted": true``."""
    transaction.on_commit(lambda: _publish_now(task, deleted), robust=True)


def _publish_now(task: TaskRecord, deleted: bool) -> None:
    if deleted:
        event = {**task.to_event(), "deleted": True}
    else:
        fresh = TaskRecord.objects.filter(pk=task.pk).first()
        if fresh is None:
            return
        task, event = fresh, fresh.to_event()
    # On the process's long-lived ring loop, as enqueue's rings: callable from
    # any thread, even one that runs an event loop, without a new Redis pool.
    sent = asyncio.run_coroutine_threadsafe(events.apublish(task, event), _ring_loop())
    try:
        sent.result(timeout=PUBLISH_TIMEOUT)
    except TimeoutError:
        logger.warning("task event not sent in time: task_id=%s", task.pk)
