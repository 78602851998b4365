"""``enqueue`` and ``aenqueue`` (``enqueue_many`` for a batch): the way work
enters the store.

The task row is written first; the channel is rung only after the surrounding
transaction commits, so a worker never looks for a row it cannot see yet, and a
rolled-back enqueue rings nothing.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import checks
from ..core.conf import library_settings
from ..core.exceptions import InvalidArgument
from ..core.payload import validate_payload
from ..messaging import revoking
from ..messaging.doorbell import aring, aring_many, ring, ring_many
from ..models import Status, TaskGroup, TaskRecord
from ..storage import followups, sql, store
from ..storage.writers import writing
from .creating import create_one, shared_commits

# enqueue's checks, named here as well (they were defined here once).
from .validation import CHANNEL_NAME as CHANNEL_NAME
from .validation import MAX_ATTEMPTS_LIMIT as MAX_ATTEMPTS_LIMIT
from .validation import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from .validation import MESSAGE_TYPE as MESSAGE_TYPE
from .validation import check_owner
from .validation import owner_id as owner_id
from .validation import same_json as same_json
from .validation import utc_run_after as utc_run_after
from .validation import validate_address as validate_address
from .validation import validate_idempotency_key as validate_idempotency_key
from .validation import validate_max_attempts as validate_max_attempts

#: The most routed channels an error message lists.
SHOWN_ROUTES = 20


def check_route(channel: str) -> None:
    """Raise ``InvalidArgument`` if the ASGI application's ``channel`` router
    is known and does not route ``channel``: no worker would ever run the task.

    Skipped with ``RETRYING_CONSUMERS["CHECK_ROUTES"] = False``, and when the
    routes are unknown (see :func:`~retrying_consumers.checks.routed_channels`).
    After the first call it costs a set lookup.
    """
    if not library_settings().check_routes:
        return
    routed = checks.routed_channels()
    if routed is None or channel in routed:
        return
    names = sorted(routed)
    listed = ", ".join(repr(name) for name in names[:SHOWN_ROUTES])
    if len(names) > SHOWN_ROUTES:
        listed += f" and {len(names) - SHOWN_ROUTES} more"
    raise InvalidArgument(
        "channel",
        f"{channel!r} is not routed by the channel router of ASGI_APPLICATION "
        f"{getattr(settings, 'ASGI_APPLICATION', None)!r}, so no worker would run "
        f"the task (it routes {listed or 'no channel'}); route it, or set "
        "RETRYING_CONSUMERS['CHECK_ROUTES'] = False in a process that does not "
        "load the routes",
    )


def prepare(
    channel: str,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int | None = None,
    user: Any = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
    then: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The checked arguments of :func:`submit`; raises on bad input, stores nothing.

    Takes the arguments of :func:`enqueue`, and touches neither the store nor
    the channel layer (safe in an event loop).
    """
    validate_address(channel, type)
    check_route(channel)
    payload = {} if payload is None else payload
    validate_payload(payload, max_bytes=library_settings().max_payload_bytes)
    validate_max_attempts(max_attempts)
    validate_idempotency_key(idempotency_key)
    due = utc_run_after(run_after)
    if then is not None and not isinstance(then, list | tuple):
        raise InvalidArgument("then", "must be a list of follow-up tasks")
    specs = [
        followups.spec(value, f"then[{n}]", followups.PARENT_KEYS, _check_followup)
        for n, value in enumerate(then or ())
    ]
    return {
        "followups": specs or None,
        "channel": channel,
        "type": type,
        "payload": payload,
        "max_attempts": max_attempts,
        "owner_id": owner_id(user),
        "idempotency_key": idempotency_key,
        "ring_timeout": library_settings().ring_timeout,
        "run_after": due if due is not None and due > timezone.now() else None,
    }


def _check_followup(channel: Any, type: Any, payload: dict[str, Any]) -> None:
    validate_address(channel, type)
    check_route(channel)
    validate_payload(payload, max_bytes=library_settings().max_payload_bytes)


def submit(fields: dict[str, Any]) -> TaskRecord:
    """Store the task :func:`prepare` checked; ring once the transaction commits.

    Returns the task as stored: queued, no attempt made (or, for an idempotency
    key already in use, that key's task as it is now).
    """
    task, created = create_one(fields)
    if created and fields["run_after"] is None:
        transaction.on_commit(lambda: ring(task), robust=True)
    return task


async def asubmit(fields: dict[str, Any]) -> TaskRecord:
    """Async twin of :func:`submit` (the row is committed before it rings).

    Calls an event loop makes while another's commit is on its way share the
    next commit (:mod:`.creating`); each still gets its own task or error.
    """
    task, created = await shared_commits()(fields)
    if created and fields["run_after"] is None:
        await aring(task)
    return task


def enqueue(
    channel: str,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int | None = None,
    user: Any = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
    then: Sequence[Any] | None = None,
) -> uuid.UUID:
    """Store a task and ring ``channel`` once the transaction commits.

    ``type`` picks the handler, as in Channels (``"thumbnail.generate"`` runs
    ``thumbnail_generate``). ``payload`` is a JSON-safe dict of at most
    ``RETRYING_CONSUMERS["MAX_PAYLOAD_BYTES"]`` bytes as compact JSON.
    ``max_attempts`` (1 to 1,000,000) overrides the consumer's policy for this
    task. ``user`` (a saved user, or None or AnonymousUser for nobody) owns the
    task: they may watch it on the page. With an ``idempotency_key`` (a
    non-empty str of at most 200 characters), enqueueing the same channel,
    type and payload again while the first task is unfinished or succeeded
    returns the first task's id, and other work under the key raises
    ``IdempotencyConflict``; after it is dead or cancelled, a new task is
    made. ``run_after`` (an aware datetime) defers the first attempt: the task
    waits in the store, ringing nothing, until the workers' scheduler finds it
    due. ``then`` names follow-up tasks, ``(channel, type, payload)`` each,
    to enqueue once this one succeeds, with ``parent_id`` and
    ``parent_result`` added to their payloads (see :mod:`.followups`). A
    ``channel`` that the ASGI application's channel router does not route is
    refused (see :func:`check_route`). Raises ``InvalidPayload`` (naming the
    offending part of the payload) or ``InvalidArgument`` (naming
    the argument), both ``ValueError``; nothing is stored then.
    """
    fields = prepare(
        channel,
        type,
        payload,
        max_attempts=max_attempts,
        user=user,
        idempotency_key=idempotency_key,
        run_after=run_after,
        then=then,
    )
    return submit(fields).id


async def aenqueue(
    channel: str,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int | None = None,
    user: Any = None,
    idempotency_key: str | None = None,
    run_after: datetime | None = None,
    then: Sequence[Any] | None = None,
) -> uuid.UUID:
    """Async twin of :func:`enqueue` (the row is committed before it rings)."""
    fields = prepare(
        channel,
        type,
        payload,
        max_attempts=max_attempts,
        user=user,
        idempotency_key=idempotency_key,
        run_after=run_after,
        then=then,
    )
    return (await asubmit(fields)).id


def prepare_many(
    channel: str,
    type: str,
    payloads: Iterable[dict[str, Any] | None],
    *,
    max_attempts: int | None = None,
    user: Any = None,
    run_after: datetime | None = None,
) -> dict[str, Any]:
    """The checked arguments of :func:`enqueue_many`'s store call, as
    :func:`prepare` checks one task's; raises on the first problem, naming a
    payload by its index (``payloads[3]['x']``), and stores nothing."""
    if isinstance(payloads, str | bytes | Mapping) or not isinstance(
        payloads, Iterable
    ):
        kind = builtins.type(payloads).__name__
        raise InvalidArgument("payloads", f"must be a list of dicts, not {kind}")
    fields = prepare(
        channel, type, {}, max_attempts=max_attempts, user=user, run_after=run_after
    )
    max_bytes = library_settings().max_payload_bytes
    checked = []
    for n, payload in enumerate(payloads):
        payload = {} if payload is None else payload
        validate_payload(payload, f"payloads[{n}]", max_bytes=max_bytes)
        checked.append(payload)
    del fields["payload"], fields["idempotency_key"], fields["followups"]
    return {**fields, "payloads": checked}


def _create_many(fields: dict[str, Any]) -> list[TaskRecord]:
    check_owner(fields["owner_id"])
    return store.create_tasks(**fields)


_acreate_many = database_sync_to_async(_create_many)


def enqueue_many(
    channel: str,
    type: str,
    payloads: Iterable[dict[str, Any] | None],
    *,
    max_attempts: int | None = None,
    user: Any = None,
    run_after: datetime | None = None,
) -> list[uuid.UUID]:
    """Store one task per payload in one transaction; ring once it commits.

    Every payload is checked first, as :func:`enqueue` checks its one: if any
    is bad, ``InvalidPayload`` names it by index (``payloads[3]['x']: ...``)
    and nothing is stored. The rows go in with multi-row INSERTs (one COPY on
    PostgreSQL with psycopg 3), and their rings are handed to the ring loop
    together once the surrounding transaction commits (nothing is rung if it
    rolls back). ``max_attempts``,
    ``user`` and ``run_after`` apply to every task. There is no
    ``idempotency_key``: enqueue keyed tasks one by one with :func:`enqueue`.
    Returns the task ids in the order of ``payloads``.
    """
    fields = prepare_many(
        channel,
        type,
        payloads,
        max_attempts=max_attempts,
        user=user,
        run_after=run_after,
    )
    if not fields["payloads"]:
        return []
    tasks = _create_many(fields)
    if fields["run_after"] is None:
        transaction.on_commit(lambda: ring_many(tasks), robust=True)
    return [task.id for task in tasks]


async def aenqueue_many(
    channel: str,
    type: str,
    payloads: Iterable[dict[str, Any] | None],
    *,
    max_attempts: int | None = None,
    user: Any = None,
    run_after: datetime | None = None,
) -> list[uuid.UUID]:
    """Async twin of :func:`enqueue_many` (the rows are committed before it
    rings)."""
    fields = prepare_many(
        channel,
        type,
        payloads,
        max_attempts=max_attempts,
        user=user,
        run_after=run_after,
    )
    if not fields["payloads"]:
        return []
    tasks = await _acreate_many(fields)
    if fields["run_after"] is None:
        await aring_many(tasks)
    return [task.id for task in tasks]


def retry_now(task_id: uuid.UUID | str, reason: str = "") -> TaskRecord:
    """Run a waiting task now, or re-drive a dead or cancelled one.

    A re-driven task gets its policy's full budget of attempts again, counted on
    from the attempts it has had ("attempt 6 of 10"). Its stored reason becomes
    ``reason`` (default: none). Raises ``TaskNotFound``, or ``ValueError`` if the
    task is running or succeeded.
    """
    task = store.retry_now(
        task_id, ring_timeout=library_settings().ring_timeout, reason=reason
    )
    if task.status == Status.QUEUED:
        transaction.on_commit(lambda: ring(task), robust=True)
    return task


def cancel(task_id: uuid.UUID | str, reason: str = "cancelled") -> TaskRecord:
    """Cancel an unfinished task. A running attempt is stopped in its worker
    within moments (an async handler is cancelled; a sync one sees
    ``self.task.cancelled``); whatever it returns afterwards is ignored."""
    task, was_running = store.cancel_running(task_id, reason=reason)
    if was_running:
        transaction.on_commit(
            lambda: revoking.announce(str(task.id), reason), robust=True
        )
    if task.group_id is not None:  # the last of its group to end?
        made = followups.fire_group(task.group_id, library_settings().ring_timeout)
        transaction.on_commit(lambda: ring_many(made), robust=True)
    return task


def prepare_group(
    tasks: Sequence[Any], then: Any, *, user: Any = None
) -> tuple[list[TaskRecord], TaskGroup]:
    """The checked, unsaved tasks and group of :func:`enqueue_group`."""
    if not isinstance(tasks, list | tuple) or not tasks:
        raise InvalidArgument("tasks", "must be a non-empty list of tasks")
    members = [
        followups.spec(value, f"tasks[{n}]", (), _check_followup)
        for n, value in enumerate(tasks)
    ]
    callback = followups.spec(then, "then", followups.GROUP_KEYS, _check_followup)
    owner = owner_id(user)
    group = TaskGroup(id=uuid.uuid4(), then=callback, owner_id=owner)
    due = timezone.now() + timedelta(seconds=library_settings().ring_timeout)
    records = [
        TaskRecord(**member, owner_id=owner, group_id=group.id, due_at=due)
        for member in members
    ]
    group.members = [str(record.id) for record in records]
    return records, group


def _create_group(records: list[TaskRecord], group: TaskGroup) -> None:
    check_owner(group.owner_id)
    with writing():
        sql.insert_tasks(records)
        group.save(force_insert=True)


def enqueue_group(
    tasks: Sequence[Any], then: Any, *, user: Any = None
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Store ``tasks`` and their follow-up in one transaction; ring them once it
    commits. Return the group's id and the tasks' ids, in order.

    Each task is ``(channel, type, payload)``; ``then`` is enqueued once every
    task of the group has ended (succeeded, dead or cancelled), with
    ``group_id`` and ``results`` (each task's ``task_id``, ``status`` and
    ``result``, in order) added to its payload. Raises ``InvalidArgument`` or
    ``InvalidPayload``, naming the task or argument; nothing is stored then.
    """
    records, group = prepare_group(tasks, then, user=user)
    _create_group(records, group)
    transaction.on_commit(lambda: ring_many(records), robust=True)
    return group.id, [record.id for record in records]


async def aenqueue_group(
    tasks: Sequence[Any], then: Any, *, user: Any = None
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Async twin of :func:`enqueue_group` (committed before it rings)."""
    records, group = prepare_group(tasks, then, user=user)
    await database_sync_to_async(_create_group)(records, group)
    await aring_many(records)
    return group.id, [record.id for record in records]


_check_owner = check_owner  # its name here before it moved to validation
