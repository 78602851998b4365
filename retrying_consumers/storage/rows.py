"""Task rows by id, and new tasks: the store's ground floor.

:func:`create_task`, :func:`create_tasks` and :func:`create_tasks_apart`
INSERT queued tasks (see
:mod:`.sql`); :func:`writing_rows` is the transaction, if any, that a batch of
row changes needs. The rest of the store (:mod:`.store`) builds on these.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections
from django.utils import timezone

from ..core.exceptions import TaskNotFound
from ..models import ACTIVE, Status, TaskRecord
from . import sql
from .writers import write_turn, writing


def get_task(task_id: uuid.UUID | str) -> TaskRecord:
    """The task with ``task_id``, or :class:`TaskNotFound`."""
    try:
        return TaskRecord.objects.get(pk=as_uuid(task_id))
    except TaskRecord.DoesNotExist:
        raise TaskNotFound(f"no task with id {task_id}") from None


def parse_task_id(value: object) -> uuid.UUID:
    """``value`` as a task id, or :class:`TaskNotFound` if it cannot be one."""
    return as_uuid(value)  # type: ignore[arg-type]


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise TaskNotFound(f"{value!r} is not a task id") from None


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
    task = new_task(
        channel=channel,
        type=type,
        payload=payload,
        ring_timeout=ring_timeout,
        max_attempts=max_attempts,
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        run_after=run_after,
        followups=followups,
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


def new_task(
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
) -> TaskRecord:
    """The queued task that :func:`create_task` writes, not written yet."""
    return TaskRecord(
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


def create_tasks_apart(tasks: Sequence[dict[str, Any]]) -> list[TaskRecord]:
    """Write the tasks of several enqueue calls in one transaction: each its own
    channel, type, owner and options (:func:`create_task`'s arguments, without
    an idempotency key). All are stored, or none; in the order given."""
    records = [new_task(**fields) for fields in tasks]
    with writing():
        sql.insert_tasks(records)
    return records


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
        new_task(
            channel=channel,
            type=type,
            payload=payload,
            ring_timeout=ring_timeout,
            max_attempts=max_attempts,
            owner_id=owner_id,
            run_after=due_at,
        )
        for payload in payloads
    ]
    with writing():
        sql.insert_tasks(tasks)
    return tasks


def _live_with_key(key: str) -> TaskRecord | None:
    # The statuses of the unique index's condition, named, so that the index
    # serves the lookup (excluding dead and cancelled would read every row).
    return TaskRecord.objects.filter(
        idempotency_key=key, status__in=[*ACTIVE, Status.SUCCEEDED]
    ).first()


def writing_rows() -> AbstractContextManager[None]:
    """:func:`writing` for a batch of ``sql`` row changes, except where the
    batch is one statement, atomic by itself (PostgreSQL). Inside a caller's
    transaction it still gets its savepoint, so that its failure does not
    spoil the caller's transaction."""
    if sql.one_statement() and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return nullcontext()
    return writing()
