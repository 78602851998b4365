"""Writing the rows of enqueue calls: one task, or the tasks of concurrent
``aenqueue`` calls in one commit.

On PostgreSQL each commit waits for the write-ahead log to reach the disk, so
a process that enqueues from many coroutines at once (the requests of one ASGI
server) was held to one commit per task. The calls an event loop makes while
the previous commit is on its way now travel together (a
:class:`~retrying_consumers.messaging.batching.GroupCommit`): their rows go in
with one INSERT and one commit, and a lone call waits for nothing but one turn
of the loop. Each call still gets its own task, or its own error: if the shared
transaction fails, each row is written again alone, so that a bad row fails
only the call that gave it.
"""

from __future__ import annotations

from typing import Any

from ..core.exceptions import IdempotencyConflict
from ..messaging.batching import GroupCommit, in_database
from ..messaging.doorbell import ring_many
from ..models import TaskRecord
from ..storage import store
from .validation import check_owner, same_json

Created = tuple[TaskRecord, bool]


def create_one(fields: dict[str, Any]) -> Created:
    """Write the task :func:`~.producer.prepare` checked; return it and whether
    it is new (an idempotency key in use returns that key's task)."""
    check_owner(fields["owner_id"])
    task, created = store.create_task(**fields)
    if not created:
        check_same_work(task, fields)
    return task, created


def check_same_work(task: TaskRecord, fields: dict[str, Any]) -> None:
    """Raise ``IdempotencyConflict`` unless ``task``, found by its idempotency
    key, is the work that ``fields`` describe (its channel, type and payload)."""
    differs = [
        name for name in ("channel", "type") if getattr(task, name) != fields[name]
    ]
    if not same_json(task.payload, fields["payload"]):
        differs.append("payload")
    if differs:
        raise IdempotencyConflict(fields["idempotency_key"], task.id, differs)


def create_together(items: list[dict[str, Any]]) -> list[Created | Exception]:
    """Write the tasks of several calls; each call's task, or its error.

    Calls without an idempotency key share one transaction. A call with a key
    looks its key up and may find an existing task, so it is written alone, as
    is every call if the shared transaction fails.
    """
    plain = [fields for fields in items if fields["idempotency_key"] is None]
    written: dict[int, TaskRecord] = {}
    if len(plain) > 1:
        try:
            for owner in {fields["owner_id"] for fields in plain}:
                check_owner(owner)
            records = store.create_tasks_apart(plain)
        except Exception:
            records = []
        written = {id(f): task for f, task in zip(plain, records, strict=False)}
    results: list[Created | Exception] = []
    for fields in items:
        if id(fields) in written:
            results.append((written[id(fields)], True))
            continue
        try:
            results.append(create_one(fields))
        except Exception as err:
            results.append(err)
    return results


def ring_orphans(pairs: list[tuple[dict[str, Any], Created]]) -> None:
    """Ring the new tasks whose callers were cancelled while their commit ran:
    the rows exist, and nobody else would ring them before the store's re-ring."""
    ring_many(
        [
            task
            for fields, (task, created) in pairs
            if created and fields["run_after"] is None
        ]
    )


def shared_commits() -> GroupCommit[dict[str, Any], Created]:
    """The running event loop's batcher of ``aenqueue`` writes."""
    return in_database("aenqueue", create_together, ring_orphans)
