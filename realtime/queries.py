"""What the dashboard shows, read from the store (synchronous ORM code)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from realtime.permissions import may_see_all
from retrying_consumers import reports
from retrying_consumers.models import (
    ACTIVE,
    AttemptRecord,
    Status,
    TaskRecord,
)

THROUGHPUT_WINDOW = 300  # seconds of history in the chart
THROUGHPUT_BUCKET = 10  # seconds per bar
LIST_LIMIT = 100


def visible_tasks(user: Any) -> QuerySet[TaskRecord]:
    """Every task ``user`` may see: staff with the admin's view (or change)
    permission see all, others their own."""
    tasks = TaskRecord.objects.all()
    return tasks if may_see_all(user) else tasks.filter(owner_id=user.pk)


def filtered_tasks(
    user: Any, status: str = "", channel: str = "", text: str = ""
) -> QuerySet[TaskRecord]:
    """The task list with the page's filters applied, newest first."""
    tasks = visible_tasks(user)
    if status:
        tasks = tasks.filter(status=status)
    if channel:
        tasks = tasks.filter(channel=channel)
    if text:
        match = Q(type__icontains=text) | Q(error_message__icontains=text)
        match |= Q(progress_message__icontains=text)
        with contextlib.suppress(ValueError):
            match |= Q(pk=uuid.UUID(text))
        tasks = tasks.filter(match)
    return tasks.order_by("-created_at")


def task_events(
    tasks: Iterable[TaskRecord], *, with_result: bool = False
) -> list[dict[str, Any]]:
    """Tasks as the websocket sends them; ``with_result`` adds each succeeded
    task's stored ``result`` (for tasks watched by id, never for a scope's list).
    """
    events = []
    for task in tasks:
        event = task.to_event()
        if with_result and task.status == Status.SUCCEEDED:
            event["result"] = task.result
        events.append(event)
    return events


def snapshot(user: Any, scope: str) -> list[dict[str, Any]]:
    """The most recent tasks of a scope ("mine" or "all")."""
    tasks = TaskRecord.objects.all() if scope == "all" else visible_tasks(user)
    if scope == "mine":
        tasks = tasks.filter(owner_id=user.pk)
    return task_events(tasks.order_by("-created_at")[:LIST_LIMIT])


def tasks_by_id(user: Any, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, TaskRecord]:
    """The tasks among ``ids`` that ``user`` may see."""
    return {task.pk: task for task in visible_tasks(user).filter(pk__in=list(ids))}


def stats(user: Any, scope: str) -> dict[str, Any]:
    """Counters, backlog per channel, throughput and live workers."""
    tasks = visible_tasks(user) if scope == "mine" else TaskRecord.objects.all()
    if scope == "mine":
        tasks = tasks.filter(owner_id=user.pk)
    counts = dict(
        tasks.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    backlog: dict[str, dict[str, int]] = {}
    active = tasks.filter(status__in=ACTIVE).values_list("channel", "status")
    for channel, status, n in active.annotate(n=Count("pk")).values_list(
        "channel", "status", "n"
    ):
        backlog.setdefault(channel, {})[status] = n
    return {
        "counters": {value: counts.get(value, 0) for value in Status.values},
        "backlog": backlog,
        "throughput": throughput(tasks),
        "workers": live_workers() if user.is_staff else [],
    }


def throughput(tasks: QuerySet[TaskRecord]) -> dict[str, Any]:
    """Tasks finished per second, in buckets over the last few minutes."""
    now = timezone.now()
    since = now - timedelta(seconds=THROUGHPUT_WINDOW)
    buckets = [0] * (THROUGHPUT_WINDOW // THROUGHPUT_BUCKET)
    finished = tasks.filter(
        status__in=[Status.SUCCEEDED, Status.DEAD], finished_at__gte=since
    ).values_list("finished_at", flat=True)
    for moment in finished.iterator():
        index = int((moment - since).total_seconds()) // THROUGHPUT_BUCKET
        buckets[min(index, len(buckets) - 1)] += 1
    return {
        "bucket_seconds": THROUGHPUT_BUCKET,
        "until": now.isoformat(),
        "per_second": [round(n / THROUGHPUT_BUCKET, 2) for n in buckets],
    }


def live_workers() -> list[dict[str, Any]]:
    """Workers whose heartbeat is recent."""
    return [worker.as_dict() for worker in reports.workers() if worker.live]


def attempts_of(task: TaskRecord) -> QuerySet[AttemptRecord]:
    """Every attempt of a task, first first."""
    return task.attempts.order_by("number")


def channels_in_use(user: Any) -> list[str]:
    """Channel names for the filter menu."""
    names = visible_tasks(user).values_list("channel", flat=True).distinct()
    return sorted(names.order_by())
