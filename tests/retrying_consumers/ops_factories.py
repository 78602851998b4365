"""Task records in every state, made through the store, for the operations tests.

Times are then moved with a plain UPDATE (``created_ago``, ``finished_ago``), so
tests choose ages instead of waiting for them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from retrying_consumers import store
from retrying_consumers.models import Status, TaskRecord, WorkerRecord
from retrying_consumers.policy import Action, Decision
from retrying_consumers.store import Failure

WORKER = "host-a:101"
RETRY_NOW = Decision(Action.RETRY, 0.0, "retry at once")
RETRY_LATER = Decision(Action.RETRY, 600.0, "retry in 600 s")
GIVE_UP = Decision(Action.GIVE_UP, None, "attempts exhausted")


def failure(error_class: str = "ConnectionError", message: str = "refused") -> Failure:
    """A failed attempt's error, with a recognisable traceback."""
    return Failure(
        outcome="failed",
        error_class=error_class,
        error_message=message,
        traceback=(
            "Traceback (most recent call last):\n"
            '  File "jobs.py", line 7, in run\n'
            f"{error_class}: {message}\n"
        ),
    )


def make(
    status: str,
    *,
    channel: str = "examples",
    type: str = "job.run",
    payload: dict[str, Any] | None = None,
    attempts: int = 1,
    error: tuple[str, str] = ("ConnectionError", "refused"),
    created_ago: timedelta | None = None,
    finished_ago: timedelta | None = None,
    now: datetime | None = None,
) -> TaskRecord:
    """A task in ``status`` with ``attempts`` attempts (failed ones before the last)."""
    task, _ = store.create_task(
        channel=channel,
        type=type,
        payload=payload if payload is not None else {"n": 1},
        ring_timeout=30,
        max_attempts=max(attempts, 3),
    )
    if status == Status.CANCELLED:
        task = store.cancel(task.id)
    elif status != Status.QUEUED:
        task = _run(task, status, attempts, failure(*error))
    return _age(task, created_ago, finished_ago, now or timezone.now())


def _run(task: TaskRecord, status: str, attempts: int, fault: Failure) -> TaskRecord:
    for number in range(1, attempts + 1):
        claimed = store.claim(
            task.id, number, worker=WORKER, lease_seconds=60, default_max_attempts=3
        )
        assert claimed is not None
        last = number == attempts
        if last and status == Status.RUNNING:
            return claimed
        if last and status == Status.SUCCEEDED:
            done = store.succeed(task.id, number, worker=WORKER, result={"ok": 1})
        else:
            decision = GIVE_UP if last and status == Status.DEAD else RETRY_NOW
            if last and status == Status.RETRYING:
                decision = RETRY_LATER
            done = store.fail(
                task.id, number, worker=WORKER, failure=fault, decision=decision
            )
        assert done is not None
        if not last:
            assert store.take_ring(task.id, ring_timeout=30) is not None
        task = done
    return task


def _age(
    task: TaskRecord,
    created_ago: timedelta | None,
    finished_ago: timedelta | None,
    now: datetime,
) -> TaskRecord:
    changes: dict[str, Any] = {}
    if created_ago is not None:
        changes["created_at"] = now - created_ago
    if finished_ago is not None:
        assert task.finished_at is not None, "only finished tasks have a finish time"
        changes["finished_at"] = now - finished_ago
    if changes:
        TaskRecord.objects.filter(pk=task.pk).update(**changes)
    return TaskRecord.objects.get(pk=task.pk)


def worker(
    name: str, heartbeat_ago: float, *, now: datetime | None = None, **fields: Any
) -> WorkerRecord:
    """A registered worker whose last heartbeat was ``heartbeat_ago`` seconds ago."""
    now = now or timezone.now()
    host, pid = name.split(":")
    values = {
        "host": host,
        "pid": int(pid),
        "channels": ["examples"],
        "concurrency": 4,
        "running": [],
        "started_at": now - timedelta(hours=1),
        "heartbeat_at": now - timedelta(seconds=heartbeat_ago),
        **fields,
    }
    return WorkerRecord.objects.create(id=name, **values)
