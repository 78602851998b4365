"""The store: durable task state, the truth that the channel layer only rings for.

A :class:`TaskRecord` is one piece of background work from ``enqueue`` until it
ends succeeded, dead or cancelled; an :class:`AttemptRecord` is one execution of
it, with its error when it failed.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Status(models.TextChoices):
    """Where a task is in its life. The last three are final."""

    QUEUED = "queued", "queued"  # rung, waiting for a worker to claim it
    RUNNING = "running", "running"  # an attempt holds the lease
    RETRYING = "retrying", "waiting to retry"  # backing off; holds no worker
    SUCCEEDED = "succeeded", "succeeded"
    DEAD = "dead", "dead"  # attempts exhausted or not retryable
    CANCELLED = "cancelled", "cancelled"  # by a person, or discarded by policy


ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
FINAL = (Status.SUCCEEDED, Status.DEAD, Status.CANCELLED)
WAITING = (Status.QUEUED, Status.RETRYING)


class Outcome(models.TextChoices):
    """How one attempt ended."""

    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    TIMED_OUT = "timed_out", "timed out"
    WORKER_LOST = "worker_lost", "worker lost"
    INTERRUPTED = "interrupted", "interrupted"
    CANCELLED = "cancelled", "cancelled"  # its task was cancelled while it ran


class TaskRecord(models.Model):
    """One task: what to run, where it is, and what happened to it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.CharField(max_length=100)
    type = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    # Attempts started so far (cumulative across re-drives) and the cap on them;
    # max_attempts stays empty until a worker applies its consumer's policy,
    # unless enqueue() fixed it.
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(null=True, blank=True)
    # Attempts per drive fixed by enqueue(max_attempts=...); empty: the policy's.
    attempt_budget = models.PositiveIntegerField(null=True, blank=True)
    # A re-drive (retry of a dead task) starts a fresh drive: the policy counts
    # attempts and elapsed time from here.
    drive_offset = models.PositiveIntegerField(default=0)
    drive_started_at = models.DateTimeField(null=True, blank=True)
    # When the scheduler acts next: for "retrying" the next attempt time, for
    # "queued" the time to ring again if no worker has claimed it by then.
    due_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    progress_current = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error_class = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    reason = models.CharField(max_length=500, blank=True)
    # Indexed by rc_task_owner, whose first column it is.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Follow-up tasks (see followups.py): the task whose success, or whose
    # group's end, enqueued this one; the tasks to enqueue when this one
    # succeeds, and whether they have been; the group this task belongs to.
    parent_id = models.UUIDField(null=True, blank=True)
    followups = models.JSONField(null=True, blank=True)
    followed_up = models.BooleanField(default=False)
    group_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Every index gets an entry for each new version of a row: an UPDATE
        # that changes the status writes to all of them. Indexes that only
        # some rows need are partial, so that a task writes about a dozen
        # index entries in its life instead of two dozen.
        indexes = [
            # The scheduler's scans touch only unfinished rows.
            models.Index(
                fields=["due_at"],
                name="rc_task_due",
                condition=Q(status__in=["queued", "retrying"]),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="rc_task_lease",
                condition=Q(status="running"),
            ),
            models.Index(fields=["status", "channel"], name="rc_task_status_channel"),
            # Queries by owner always name one: ownerless tasks are left out.
            models.Index(
                fields=["owner", "-created_at"],
                name="rc_task_owner",
                condition=Q(owner__isnull=False),
            ),
            models.Index(fields=["-created_at"], name="rc_task_created"),
            # Retention asks for tasks finished before a time.
            models.Index(
                fields=["status", "finished_at"],
                name="rc_task_finished",
                condition=Q(finished_at__isnull=False),
            ),
            # Follow-ups: children of a task, members of a group, and the
            # succeeded tasks whose follow-ups are still to be enqueued.
            models.Index(
                fields=["parent_id"],
                name="rc_task_parent",
                condition=Q(parent_id__isnull=False),
            ),
            models.Index(
                fields=["group_id", "status"],
                name="rc_task_group",
                condition=Q(group_id__isnull=False),
            ),
            models.Index(
                fields=["finished_at"],
                name="rc_task_followups_due",
                condition=Q(followups__isnull=False, followed_up=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="rc_task_idempotency_key",
                condition=Q(idempotency_key__isnull=False)
                & Q(status__in=["queued", "running", "retrying", "succeeded"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def to_event(self) -> dict[str, Any]:
        """The task as browsers and signal receivers see it (JSON-safe)."""
        return {
            "id": str(self.id),
            "channel": self.channel,
            "type": self.type,
            "status": self.status,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "progress": {
                "current": self.progress_current,
                "total": self.progress_total,
                "message": self.progress_message,
            },
            "next_attempt_at": _iso(self.due_at)
            if self.status == Status.RETRYING
            else None,
            "error": {"class": self.error_class, "message": self.error_message}
            if self.error_class
            else None,
            "reason": self.reason,
            "owner_id": self.owner_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
        }


class AttemptRecord(models.Model):
    """One execution of a task, stored once, with its error as text."""

    # No foreign key in the database: PostgreSQL checks one with a plan it
    # caches per connection, and a worker that starts on a young, small task
    # table keeps a plan that reads the whole table, for every attempt it
    # starts, until the table's statistics are next gathered. Attempts are
    # written only for the task a claim has just updated, and Django deletes
    # them with their task (CASCADE). The unique (task, number) index serves
    # lookups by task.
    task = models.ForeignKey(
        TaskRecord,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_constraint=False,
        db_index=False,
    )
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=16, choices=Outcome.choices, default=Outcome.RUNNING
    )
    error_class = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    # What the policy decided after this attempt, and when the next one is due.
    decision = models.CharField(max_length=16, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "number"], name="rc_attempt_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.task_id} ({self.outcome})"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class WorkerRecord(models.Model):
    """A live worker process, as it last said (the registry the page reads)."""

    id = models.CharField(primary_key=True, max_length=200)  # host:pid
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    channels = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField(default=1)
    running = models.JSONField(default=list, blank=True)  # task ids in flight
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    class Meta:
        ordering = ["host", "pid"]
        indexes = [models.Index(fields=["heartbeat_at"], name="rc_worker_heartbeat")]

    def __str__(self) -> str:
        return self.id


class TaskLimiter(models.Model):
    """The shared state of one message type's limits (see :mod:`.limits`).

    One row per channel and type with a ``max_running`` or ``rate_limit``: its
    row lock orders the claims of that type across every worker. ``starts``
    holds the rate limit's last N start times (epoch seconds), and
    ``reserved_until`` the end of the slots handed to tasks waiting for it.
    """

    key = models.CharField(primary_key=True, max_length=320)  # channel:type
    starts = models.JSONField(default=list)
    reserved_until = models.DateTimeField()
    touched_at = models.DateTimeField()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class TaskGroup(models.Model):
    """Tasks enqueued together, and the task to enqueue once all have ended."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    members = models.JSONField(default=list)  # task ids, in the caller's order
    then = models.JSONField()  # the follow-up: channel, type, payload
    owner_id = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    callback_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="rc_group_pending",
                condition=Q(fired_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"group {self.id} ({len(self.members)} tasks)"


class AuditAction(models.TextChoices):
    """What a person (or a script) did to a task."""

    RETRY = "retry", "retried now"  # a waiting task made due now
    REDRIVE = "redrive", "re-driven"  # a dead or cancelled task given new attempts
    CANCEL = "cancel", "cancelled"
    DELETE = "delete", "deleted"


class AuditSource(models.TextChoices):
    """Where the action was taken."""

    PAGE = "page", "the task page"
    ADMIN = "admin", "the admin"
    COMMAND = "command", "manage.py tasks"
    API = "api", "the API"


class TaskAuditRecord(models.Model):
    """Who retried, cancelled or deleted a task, when, and from where.

    Holds the task's id, not a foreign key, so that the trail of a deleted task
    survives it; and the actor's username as text, so that it survives the user.
    """

    task_id = models.UUIDField()
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField()
    source = models.CharField(max_length=16, choices=AuditSource.choices)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["task_id", "at"], name="rc_audit_task")]

    def __str__(self) -> str:
        return f"{self.action} of {self.task_id} by {self.actor_name or '?'}"

    def to_event(self) -> dict[str, Any]:
        """The record as JSON-safe data."""
        return {
            "task_id": str(self.task_id),
            "action": self.action,
            "actor": self.actor_name,
            "at": _iso(self.at),
            "source": self.source,
            "detail": self.detail,
        }


class ScheduleTick(models.Model):
    """One tick of a periodic task, taken by the worker that enqueued its task.

    The unique (schedule, tick) pair is the claim: whichever worker inserts the
    row first enqueues the tick's task in the same transaction; every other
    worker's insert fails, and it enqueues nothing.
    """

    schedule = models.CharField(max_length=100)
    tick_at = models.DateTimeField()
    task_id = models.UUIDField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-tick_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "tick_at"], name="rc_schedule_tick_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.tick_at.isoformat()}"
