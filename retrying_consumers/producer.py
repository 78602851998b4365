"""``enqueue`` and ``aenqueue``: the way work enters the store.

The task row is written first; the channel is rung only after the surrounding
transaction commits, so a worker never looks for a row it cannot see yet, and a
rolled-back enqueue rings nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import store
from .conf import library_settings
from .doorbell import aring, ring
from .models import Status, TaskRecord
from .payload import validate_payload

CHANNEL_NAME = re.compile(r"[a-zA-Z0-9\-_.]{1,99}")
MESSAGE_TYPE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.]{0,199}")


def validate_address(channel: str, type: str) -> None:
    """Raise ``ValueError`` unless ``channel`` and ``type`` can route a message."""
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        raise ValueError(
            f"channel {channel!r} is not a valid channel name (ASCII letters, "
            "digits, '-', '_' and '.', under 100 characters)"
        )
    if not isinstance(type, str) or not MESSAGE_TYPE.fullmatch(type):
        raise ValueError(
            f"type {type!r} is not a valid message type (a letter, then letters, "
            "digits, '_' and '.', e.g. 'thumbnail.generate')"
        )


def _prepare(
    channel: str,
    type: str,
    payload: dict[str, Any] | None,
    max_attempts: int | None,
) -> dict[str, Any]:
    validate_address(channel, type)
    payload = {} if payload is None else payload
    validate_payload(payload)
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or max_attempts < 1
    ):
        raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    return payload


def _deferred(run_after: datetime | None) -> datetime | None:
    """``run_after`` if it is still to come, else None (the task runs now)."""
    if run_after is None:
        return None
    if not isinstance(run_after, datetime) or run_after.utcoffset() is None:
        raise ValueError(f"run_after must be an aware datetime, got {run_after!r}")
    return run_after if run_after > timezone.now() else None


def _task_fields(
    channel: str,
    type: str,
    payload: dict[str, Any] | None,
    max_attempts: int | None,
    user: Any,
    idempotency_key: str | None,
    run_after: datetime | None,
) -> dict[str, Any]:
    """Validated arguments for ``store.create_task``; raises on bad input."""
    return {
        "channel": channel,
        "type": type,
        "payload": _prepare(channel, type, payload, max_attempts),
        "max_attempts": max_attempts,
        "owner_id": _owner_id(user),
        "idempotency_key": idempotency_key,
        "ring_timeout": library_settings().ring_timeout,
        "run_after": _deferred(run_after),
    }


def _owner_id(user: Any) -> int | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return int(user.pk)


def enqueue(
    channel: str,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int | None = None,
    user: Any = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
) -> uuid.UUID:
    """Store a task and ring ``channel`` once the transaction commits.

    ``type`` picks the handler, as in Channels (``"thumbnail.generate"`` runs
    ``thumbnail_generate``). ``max_attempts`` overrides the consumer's policy for
    this task. ``user`` owns the task (they may watch it on the page). With an
    ``idempotency_key``, enqueueing again while the first task is unfinished or
    succeeded returns the first task's id; after it is dead or cancelled, a new
    task is made. ``run_after`` (an aware datetime) defers the first attempt:
    the task waits in the store, ringing nothing, until the workers' scheduler
    finds it due. Raises ``InvalidPayload`` (naming the offending key) or
    ``ValueError`` for bad arguments; nothing is stored then.
    """
    fields = _task_fields(
        channel, type, payload, max_attempts, user, idempotency_key, run_after
    )
    task, created = store.create_task(**fields)
    if created and fields["run_after"] is None:
        transaction.on_commit(lambda: ring(task), robust=True)
    return task.id


async def aenqueue(
    channel: str,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int | None = None,
    user: Any = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
) -> uuid.UUID:
    """Async twin of :func:`enqueue` (the row is committed before it rings)."""
    fields = _task_fields(
        channel, type, payload, max_attempts, user, idempotency_key, run_after
    )
    task, created = await store.acreate_task(**fields)
    if created and fields["run_after"] is None:
        await aring(task)
    return task.id


def retry_now(task_id: uuid.UUID | str) -> TaskRecord:
    """Run a waiting task now, or re-drive a dead or cancelled one.

    A re-driven task gets its policy's full budget of attempts again, counted on
    from the attempts it has had ("attempt 6 of 10"). Raises ``TaskNotFound``, or
    ``ValueError`` if the task is running or succeeded.
    """
    task = store.retry_now(task_id, ring_timeout=library_settings().ring_timeout)
    if task.status == Status.QUEUED:
        transaction.on_commit(lambda: ring(task), robust=True)
    return task


def cancel(task_id: uuid.UUID | str, reason: str = "cancelled") -> TaskRecord:
    """Cancel an unfinished task; a running attempt's outcome is then ignored."""
    return store.cancel(task_id, reason=reason)
