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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import close_old_connections, connections
from django.db.models import F
from django.utils import timezone

from ..core.conf import library_settings
from ..core.exceptions import TaskNotFound
from ..core.policy import Action, AttemptState, Decision
from ..models import AttemptRecord, Outcome, Status, TaskRecord
from . import sql

# Callers see one store: what the store's modules by concern (rows, sweeps,
# actions) define is named here too.
from .actions import cancel as cancel
from .actions import cancel_running as cancel_running
from .actions import retry_now as retry_now
from .rows import as_uuid
from .rows import create_task as create_task
from .rows import create_tasks as create_tasks
from .rows import create_tasks_apart as create_tasks_apart
from .rows import get_task as get_task
from .rows import parse_task_id as parse_task_id
from .rows import writing_rows as _writing_rows
from .sql import ClaimRequest, Success
from .sweeps import due_channels as due_channels
from .sweeps import due_task_ids as due_task_ids
from .sweeps import expired_lease_ids as expired_lease_ids
from .sweeps import make_due as make_due
from .sweeps import take_ring as take_ring
from .sweeps import take_rings as take_rings
from .writers import write_turn, writing


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong in one attempt, as text (never pickled)."""

    outcome: str  # an Outcome value
    error_class: str
    error_message: str
    traceback: str = ""


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
    request = ClaimRequest(as_uuid(task_id), attempt, default_max_attempts)
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
    success = Success(as_uuid(task_id), attempt, result)
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
    item = FailedAttempt(as_uuid(task_id), attempt, failure, decision)
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
    return TaskRecord.objects.get(pk=as_uuid(task_id))


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
            pk=as_uuid(task_id), status=Status.RUNNING
        ).update(
            progress_current=current,
            progress_total=total,
            progress_message=message[:500],
            progress_at=now,
            updated_at=now,
        )
    return bool(saved)


def _ours(task_id: uuid.UUID | str, attempt: int, worker: str) -> Any:
    return TaskRecord.objects.filter(
        pk=as_uuid(task_id), status=Status.RUNNING, attempt=attempt, lease_owner=worker
    )


def _finish_attempt(
    task_id: uuid.UUID | str, number: int, now: datetime, **fields: Any
) -> None:
    AttemptRecord.objects.filter(task_id=as_uuid(task_id), number=number).update(
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
