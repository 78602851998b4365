"""Every change of task state, each one a single conditional UPDATE.

The conditions make the store the referee: a claim succeeds only for the attempt
that is due, an outcome is recorded only by the worker that holds the lease, and
a ring is taken by one scheduler only. Duplicate or late messages therefore change
nothing. Functions are synchronous; the ``a``-prefixed twins run them in Django's
database thread.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    close_old_connections,
    connections,
)
from django.db.models import F
from django.utils import timezone

from ..core.conf import library_settings
from ..core.exceptions import TaskNotFound
from ..core.policy import Action, AttemptState, Decision
from ..models import ACTIVE, AttemptRecord, Outcome, Status, TaskRecord
from . import sql
from .sql import ClaimRequest, Success
from .writers import write_turn, writing


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong in one attempt, as text (never pickled)."""

    outcome: str  # an Outcome value
    error_class: str
    error_message: str
    traceback: str = ""


def get_task(task_id: uuid.UUID | str) -> TaskRecord:
    """The task with ``task_id``, or :class:`TaskNotFound`."""
    try:
        return TaskRecord.objects.get(pk=_uuid(task_id))
    except TaskRecord.DoesNotExist:
        raise TaskNotFound(f"no task with id {task_id}") from None


def create_task(
    *,
    channel: str,
    type: str,
    payload: dict[str, Any],
    ring_timeout: float,
    max_attempts: int | None = None,
    owner_id: int | None = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
    followups: list[dict[str, Any]] | None = None,
) -> tuple[TaskRecord, bool]:
    """Write a queued task; return it and whether it is new.

    With an ``idempotency_key`` that an unfinished or succeeded task already has,
    that task is returned instead (``False``). With ``run_after``, the task is
    due then: the scheduler rings it when that time comes (the caller must not).
    """
    if idempotency_key is not None:
        existing = _live_with_key(idempotency_key)
        if existing is not None:
            return existing, False
    task = TaskRecord(
        channel=channel,
        type=type,
        payload=payload,
        max_attempts=max_attempts,
        attempt_budget=max_attempts,
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        due_at=run_after or timezone.now() + timedelta(seconds=ring_timeout),
        followups=followups or None,
    )
    if idempotency_key is None:  # nothing can clash: the INSERT is atomic alone
        with write_turn():
            sql.insert_task(task)
        return task, True
    try:
        with writing():
            sql.insert_task(task)
    except IntegrityError:
        # Lost a race with another enqueue of the same key.
        existing = _live_with_key(idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return task, True


def create_tasks(
    *,
    channel: str,
    type: str,
    payloads: Sequence[dict[str, Any]],
    ring_timeout: float,
    max_attempts: int | None = None,
    owner_id: int | None = None,
    run_after: datetime | None = None,
) -> list[TaskRecord]:
    """Write one queued task per payload, in one transaction; return them in
    the order of ``payloads``. Takes :func:`create_task`'s arguments but the
    idempotency key: all are stored, or none."""
    due_at = run_after or timezone.now() + timedelta(seconds=ring_timeout)
    tasks = [
        TaskRecord(
            channel=channel,
            type=type,
            payload=payload,
            max_attempts=max_attempts,
            attempt_budget=max_attempts,
            owner_id=owner_id,
            due_at=due_at,
        )
        for payload in payloads
    ]
    with writing():
        sql.insert_tasks(tasks)
    return tasks


def _writing_rows() -> AbstractContextManager[None]:
    """:func:`writing` for a batch of ``sql`` row changes, except where the
    batch is one statement, atomic by itself (PostgreSQL). Inside a caller's
    transaction it still gets its savepoint, so that its failure does not
    spoil the caller's transaction."""
    if sql.one_statement() and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return nullcontext()
    return writing()


def _live_with_key(key: str) -> TaskRecord | None:
    # The statuses of the unique index's condition, named, so that the index
    # serves the lookup (excluding dead and cancelled would read every row).
    return TaskRecord.objects.filter(
        idempotency_key=key, status__in=[*ACTIVE, Status.SUCCEEDED]
    ).first()


def claim(
    task_id: uuid.UUID | str,
    attempt: int,
    *,
    worker: str,
    lease_seconds: float,
    default_max_attempts: int,
) -> TaskRecord | None:
    """Take attempt ``attempt`` of a task; None if it is not ours to run.

    Exactly one claimer wins, whatever the number of duplicate messages: the
    UPDATE matches only while the task is at ``attempt - 1`` and queued, or
    retrying with its ``due_at`` passed.
    """
    request = ClaimRequest(_uuid(task_id), attempt, default_max_attempts)
    [outcome] = claim_many([request], worker=worker, lease_seconds=lease_seconds)
    if isinstance(outcome, TaskNotFound):
        raise outcome
    return outcome


def claim_many(
    requests: Sequence[ClaimRequest], *, worker: str, lease_seconds: float
) -> list[TaskRecord | TaskNotFound | None]:
    """:func:`claim` for several attempts in one transaction, in order.

    For each request: the claimed task, None if it was not ours to run, or a
    :class:`TaskNotFound` (not raised) if there is no such task. Each claim is
    its own conditional UPDATE, exactly as in :func:`claim`; sharing the
    transaction only saves the commits.
    """
    if not requests:
        return []
    with _writing_rows():
        claimed = sql.claim_rows(
            requests, worker=worker, lease_seconds=lease_seconds, now=timezone.now()
        )
    lost = [r.task_id for r, task in zip(requests, claimed, strict=True) if not task]
    present = sql.existing_ids(lost)
    return [
        task
        if task is not None or r.task_id in present
        else TaskNotFound(f"no task with id {r.task_id}")
        for r, task in zip(requests, claimed, strict=True)
    ]


def extend_lease(
    task_id: uuid.UUID | str, attempt: int, *, worker: str, lease_seconds: float
) -> bool:
    """Renew the lease of a running attempt; False if it is no longer ours."""
    now = timezone.now()
    with write_turn():
        renewed = _ours(task_id, attempt, worker).update(
            lease_expires_at=now + timedelta(seconds=lease_seconds)
        )
    return bool(renewed)


def succeed(
    task_id: uuid.UUID | str,
    attempt: int,
    *,
    worker: str,
    result: Any = None,
    known: TaskRecord | None = None,
) -> TaskRecord | None:
    """Record success; None if the attempt was no longer ours (lease lost).

    ``known``, the record as claimed, is updated in memory and returned instead
    of reading the row again.
    """
    success = Success(_uuid(task_id), attempt, result)
    [done] = succeed_many([(success, known)], worker=worker)
    return done


def succeed_many(
    successes: Sequence[tuple[Success, TaskRecord | None]], *, worker: str
) -> list[TaskRecord | None]:
    """:func:`succeed` for several attempts in one transaction, in order.

    Each pair is a success and the record as claimed (or None to read it again).
    """
    if not successes:
        return []
    now = timezone.now()
    with _writing_rows():
        ours = sql.succeed_rows(
            [success for success, _ in successes], worker=worker, now=now
        )
    changes = {
        "status": Status.SUCCEEDED,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": "",
        "lease_expires_at": None,
        "due_at": None,
        "reason": "",
    }
    done: list[TaskRecord | None] = []
    for (success, known), recorded in zip(successes, ours, strict=True):
        if not recorded:
            done.append(None)
            continue
        if known is None:
            done.append(TaskRecord.objects.get(pk=success.task_id))
            continue
        for field, value in changes.items():
            setattr(known, field, value)
        known.result = success.result
        done.append(known)
    return done


#: The status a task takes after a failed attempt, by the decision.
STATUS_AFTER = {
    Action.RETRY: Status.RETRYING,
    Action.GIVE_UP: Status.DEAD,
    Action.DISCARD: Status.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A failed attempt to record: what went wrong and what follows."""

    task_id: uuid.UUID
    attempt: int
    failure: Failure
    decision: Decision


def fail(
    task_id: uuid.UUID | str,
    attempt: int,
    *,
    worker: str | None,
    failure: Failure,
    decision: Decision,
) -> TaskRecord | None:
    """Record a failed attempt and what follows it; None if it was not ours.

    ``worker=None`` is the scheduler recording a lost worker: it matches any
    lease owner, but only while the task is still running that attempt.
    """
    item = FailedAttempt(_uuid(task_id), attempt, failure, decision)
    [done] = fail_many([item], worker=worker)
    return done


def fail_many(
    items: Sequence[FailedAttempt], *, worker: str | None
) -> list[TaskRecord | None]:
    """:func:`fail` for several attempts in one transaction, in order."""
    now = timezone.now()
    limit = library_settings().traceback_limit
    rows = []
    for item in items:
        decision, failure = item.decision, item.failure
        next_at = decision.next_attempt_at(now)
        if decision.action is Action.RETRY and next_at is None:
            next_at = now  # a retry must be due some time, or it is never rung
        status = STATUS_AFTER[decision.action]
        end = sql.AttemptEnd(
            outcome=failure.outcome,
            error_class=failure.error_class,
            error_message=failure.error_message,
            traceback=failure.traceback[-limit:],
            decision=decision.action.value,
            next_attempt_at=next_at,
        )
        rows.append(
            sql.FailedRow(
                task_id=item.task_id,
                attempt=item.attempt,
                status=str(status),
                due_at=next_at,
                finished_at=None if status == Status.RETRYING else now,
                reason=decision.reason,
                end=end,
            )
        )
    with _writing_rows():
        return sql.fail_rows(rows, worker=worker, now=now)


def interrupt(
    task_id: uuid.UUID | str, attempt: int, *, worker: str
) -> TaskRecord | None:
    """Hand back an attempt that a stopping worker ended; None if not ours.

    The task is queued again, due at once, and its cap grows by one: being
    interrupted by a deploy does not use up the task's attempts.
    """
    now = timezone.now()
    with writing():
        done = _ours(task_id, attempt, worker).update(
            status=Status.QUEUED,
            due_at=now,
            max_attempts=F("max_attempts") + 1,
            lease_owner="",
            lease_expires_at=None,
            updated_at=now,
        )
        if not done:
            return None
        _finish_attempt(
            task_id,
            attempt,
            now,
            outcome=Outcome.INTERRUPTED,
            error_class="AttemptInterrupted",
            error_message="the worker stopped before the attempt finished",
            decision=Action.RETRY.value,
            next_attempt_at=now,
        )
    return TaskRecord.objects.get(pk=_uuid(task_id))


def interruptions(task: TaskRecord) -> int:
    """How many attempts of the task's current drive a stopping worker ended."""
    return AttemptRecord.objects.filter(
        task_id=task.pk, number__gt=task.drive_offset, outcome=Outcome.INTERRUPTED
    ).count()


def attempt_state(task: TaskRecord, now: datetime | None = None) -> AttemptState:
    """The policy's view of a task whose current attempt has just failed."""
    now = now or timezone.now()
    return AttemptState(
        attempt=max(1, task.attempt - task.drive_offset),
        first_started_at=task.drive_started_at or task.started_at or now,
        now=now,
    )


def take_ring(task_id: uuid.UUID | str, *, ring_timeout: float) -> TaskRecord | None:
    """Take the duty of ringing a due task; None if it is not due or taken.

    A retrying task becomes queued; either way its ``due_at`` moves on by
    ``ring_timeout``, so that if the message is lost the task is rung again.
    """
    [task] = take_rings([_uuid(task_id)], ring_timeout=ring_timeout)
    return task


def take_rings(
    task_ids: Sequence[uuid.UUID], *, ring_timeout: float
) -> list[TaskRecord | None]:
    """:func:`take_ring` for several tasks in one UPDATE, in order."""
    with _writing_rows():
        taken = sql.take_rings(task_ids, ring_timeout=ring_timeout, now=timezone.now())
    return [taken.pop(task_id, None) for task_id in task_ids]


def save_progress(
    task_id: uuid.UUID | str,
    current: float | None,
    total: float | None,
    message: str,
) -> bool:
    """Store the latest progress of a running task; False if it is not running."""
    now = timezone.now()
    with write_turn():
        saved = TaskRecord.objects.filter(
            pk=_uuid(task_id), status=Status.RUNNING
        ).update(
            progress_current=current,
            progress_total=total,
            progress_message=message[:500],
            progress_at=now,
            updated_at=now,
        )
    return bool(saved)


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
    pk = _uuid(task_id)
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


def _ours(task_id: uuid.UUID | str, attempt: int, worker: str) -> Any:
    return TaskRecord.objects.filter(
        pk=_uuid(task_id), status=Status.RUNNING, attempt=attempt, lease_owner=worker
    )


def _finish_attempt(
    task_id: uuid.UUID | str, number: int, now: datetime, **fields: Any
) -> None:
    AttemptRecord.objects.filter(task_id=_uuid(task_id), number=number).update(
        finished_at=now, **fields
    )


def _in_own_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` for a pool thread: with fresh database connections, closed after.

    Lease renewal must not wait behind sync handlers, which all share Django's
    one thread-sensitive thread: a long handler would lose its own lease.
    """

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def parse_task_id(value: object) -> uuid.UUID:
    """``value`` as a task id, or :class:`TaskNotFound` if it cannot be one."""
    return _uuid(value)  # type: ignore[arg-type]


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise TaskNotFound(f"{value!r} is not a task id") from None


aget_task = database_sync_to_async(get_task)
ainterruptions = database_sync_to_async(interruptions)
acreate_task = database_sync_to_async(create_task)
aclaim = database_sync_to_async(claim)
aextend_lease = sync_to_async(_in_own_thread(extend_lease), thread_sensitive=False)
asucceed = database_sync_to_async(succeed)
afail = database_sync_to_async(fail)
ainterrupt = database_sync_to_async(interrupt)
asave_progress = database_sync_to_async(save_progress)
aretry_now = database_sync_to_async(retry_now)
acancel = database_sync_to_async(cancel)
