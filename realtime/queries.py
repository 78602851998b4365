"""What the dashboard shows, read from the store (synchronous ORM code)."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    QuerySet,
)
from django.db.models.functions import Cast
from django.utils import timezone

from realtime.permissions import may_see_all
from retrying_consumers.models import (
    ACTIVE,
    AttemptRecord,
    Status,
    TaskRecord,
)
from retrying_consumers.ops import reports

THROUGHPUT_WINDOW = 300  # seconds of history in the live chart
THROUGHPUT_BUCKET = 10  # seconds per bar
#: The chart's ranges: name -> (seconds of history, seconds per bar).
CHART_RANGES: dict[str, tuple[int, int]] = {
    "5m": (THROUGHPUT_WINDOW, THROUGHPUT_BUCKET),
    "hour": (3600, 60),
    "day": (86400, 1800),
}
LIST_LIMIT = 100
PAGE_SIZES = (25, 50, 100)
PAGE_SIZE = 25  # as Sidekiq: a page that paints at once
#: Sort keys of the task list -> the column; each sorts descending by default.
SORTS = {
    "created": "created_at",
    "finished": "finished_at",
    "duration": "duration",
    "next": "due_at",
}
_HEX_PREFIX = re.compile(r"^[0-9a-f]{4,32}$")


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
        tasks = tasks.filter(text_match(text))
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


def text_match(text: str) -> Q:
    """What the search box finds: anything the list shows.

    Type, channel, error class and message, progress message, and the task id,
    whole or by the leading hex digits the list shows ("3f9a1c2e").
    """
    text = text.strip()
    match = Q(type__icontains=text) | Q(channel__icontains=text)
    match |= Q(error_class__icontains=text) | Q(error_message__icontains=text)
    match |= Q(progress_message__icontains=text)
    with contextlib.suppress(ValueError):
        return match | Q(pk=uuid.UUID(text))
    digits = text.lower().rstrip("…").replace("-", "")
    if _HEX_PREFIX.match(digits) and len(digits) <= 8:
        # The first eight hex digits come before the first dash whichever way
        # the database spells a UUID as text.
        match |= Q(id_text__startswith=digits)
    return match


@dataclass(frozen=True)
class TaskPage:
    """One page of the filtered, sorted task list, with the total."""

    tasks: list[TaskRecord]
    total: int
    number: int
    size: int
    sort: str
    descending: bool

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        """1-based position of the first task shown (0 if none)."""
        return (self.number - 1) * self.size + 1 if self.tasks else 0

    @property
    def last(self) -> int:
        return (self.number - 1) * self.size + len(self.tasks)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def sorted_tasks(
    tasks: QuerySet[TaskRecord], sort: str = "created", descending: bool = True
) -> QuerySet[TaskRecord]:
    """``tasks`` in the list's order; tasks without the value come last.

    Ties (and tasks without the value) go by creation, newest first, and then by
    id, so that pages never overlap or skip a task.
    """
    column = SORTS.get(sort, "created_at")
    if column == "duration":
        tasks = tasks.annotate(
            duration=ExpressionWrapper(
                F("finished_at") - F("started_at"), output_field=DurationField()
            )
        )
    field = F(column)
    primary = field.desc(nulls_last=True) if descending else field.asc(nulls_last=True)
    if column == "created_at":
        return tasks.order_by(primary, "-id" if descending else "id")
    return tasks.order_by(primary, "-created_at", "-id")


def task_page(
    user: Any,
    status: str = "",
    channel: str = "",
    text: str = "",
    *,
    sort: str = "created",
    descending: bool = True,
    number: int = 1,
    size: int = PAGE_SIZE,
    error_class: str = "",
) -> TaskPage:
    """A page of the task list as the dashboard shows it."""
    tasks = visible_tasks(user)
    if text.strip():
        tasks = tasks.annotate(id_text=Cast("id", output_field=CharField()))
    tasks = filter_tasks(tasks, status, channel, text, error_class)
    total = tasks.count()
    size = size if size in PAGE_SIZES else PAGE_SIZE
    pages = max(1, -(-total // size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    sort = sort if sort in SORTS else "created"
    rows = list(sorted_tasks(tasks, sort, descending)[start : start + size])
    return TaskPage(rows, total, number, size, sort, descending)


def filter_tasks(
    tasks: QuerySet[TaskRecord],
    status: str = "",
    channel: str = "",
    text: str = "",
    error_class: str = "",
) -> QuerySet[TaskRecord]:
    """``tasks`` narrowed by the list's filters (the text needs ``id_text``)."""
    if status:
        tasks = tasks.filter(status=status)
    if channel:
        tasks = tasks.filter(channel=channel)
    if error_class:
        tasks = tasks.filter(error_class=error_class)
    if text.strip():
        if "id_text" not in tasks.query.annotations:
            tasks = tasks.annotate(id_text=Cast("id", output_field=CharField()))
        tasks = tasks.filter(text_match(text))
    return tasks


def failure_groups(user: Any, limit: int = 20) -> list[dict[str, Any]]:
    """Dead and retrying tasks grouped by error class, largest group first."""
    rows = (
        visible_tasks(user)
        .filter(status__in=[Status.DEAD, Status.RETRYING])
        .exclude(error_class="")
        .values("error_class")
        .annotate(
            dead=Count("pk", filter=Q(status=Status.DEAD)),
            retrying=Count("pk", filter=Q(status=Status.RETRYING)),
            total=Count("pk"),
        )
        .order_by("-total", "error_class")
    )
    return list(rows[:limit])


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
    now = timezone.now()
    workers = [worker for worker in reports.workers(now) if worker.live]
    return {
        "counters": {value: counts.get(value, 0) for value in Status.values},
        "backlog": backlog(tasks, workers, now),
        "throughput": throughput(tasks, now=now),
        "workers": live_workers(workers) if user.is_staff else [],
    }


def backlog(
    tasks: QuerySet[TaskRecord],
    workers: list[reports.WorkerInfo],
    now: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Unfinished tasks per channel, the oldest queued task's age in seconds,
    and whether any live worker serves the channel."""
    now = now or timezone.now()
    served = {name for worker in workers for name in worker.channels}
    result: dict[str, dict[str, Any]] = {}
    active = tasks.filter(status__in=ACTIVE).values_list("channel", "status")
    for channel, status, n, oldest in (
        active.annotate(n=Count("pk"), oldest=Min("created_at"))
        .values_list("channel", "status", "n", "oldest")
        .order_by()
    ):
        entry = result.setdefault(
            channel, {"oldest_queued_seconds": None, "served": channel in served}
        )
        entry[status] = n
        if status == Status.QUEUED and oldest is not None:
            entry["oldest_queued_seconds"] = max(0, int((now - oldest).total_seconds()))
    return dict(sorted(result.items()))


def throughput(
    tasks: QuerySet[TaskRecord], span: str = "5m", now: datetime | None = None
) -> dict[str, Any]:
    """Tasks that succeeded and that died, per bucket, over ``span``.

    ``span`` is a key of :data:`CHART_RANGES`. ``per_second`` is both together.
    """
    window, bucket = CHART_RANGES.get(span, CHART_RANGES["5m"])
    now = now or timezone.now()
    since = now - timedelta(seconds=window)
    count = window // bucket
    series = {"succeeded": [0] * count, "dead": [0] * count}
    finished = tasks.filter(
        status__in=[Status.SUCCEEDED, Status.DEAD], finished_at__gte=since
    ).values_list("status", "finished_at")
    for status, moment in finished.iterator():
        index = int((moment - since).total_seconds()) // bucket
        series[status][min(index, count - 1)] += 1
    succeeded, dead = series["succeeded"], series["dead"]
    return {
        "range": span if span in CHART_RANGES else "5m",
        "window_seconds": window,
        "bucket_seconds": bucket,
        "until": now.isoformat(),
        "succeeded": succeeded,
        "dead": dead,
        "per_second": [
            round((s + d) / bucket, 2) for s, d in zip(succeeded, dead, strict=True)
        ],
    }


def live_workers(
    workers: list[reports.WorkerInfo] | None = None,
) -> list[dict[str, Any]]:
    """Workers whose heartbeat is recent, with ``busy``: the tasks each holds
    the lease of now, read from the tasks (the heartbeat's list lags by up to
    its interval)."""
    if workers is None:
        workers = [worker for worker in reports.workers() if worker.live]
    held = dict(
        TaskRecord.objects.filter(
            status=Status.RUNNING, lease_owner__in=[w.id for w in workers]
        )
        .values_list("lease_owner")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return [{**worker.as_dict(), "busy": held.get(worker.id, 0)} for worker in workers]


def attempts_of(task: TaskRecord) -> QuerySet[AttemptRecord]:
    """Every attempt of a task, first first."""
    return task.attempts.order_by("number")


def channels_in_use(user: Any) -> list[str]:
    """Channel names for the filter menu."""
    names = visible_tasks(user).values_list("channel", flat=True).distinct()
    return sorted(names.order_by())
