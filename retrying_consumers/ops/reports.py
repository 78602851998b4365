"""Read-only views of the store for people: the backlog per channel, the workers.

Shared by ``manage.py tasks`` and the metrics endpoint. Every query groups on an
index: ``(status, channel)`` for counts, the partial ``due_at`` index for overdue
tasks, and the worker registry is small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from ..models import WAITING, Status, TaskRecord, WorkerRecord

#: A worker whose last heartbeat is older than this (seconds) is not live
#: (it beats every 5 s).
LIVE_AFTER = 15.0

STATUSES: tuple[str, ...] = tuple(Status.values)


@dataclass
class ChannelBacklog:
    """Tasks of one channel by status, and how far behind its workers are.

    A waiting task is *overdue* when its due time has passed and no worker has
    claimed it yet: the workers are behind, or none serves the channel.
    """

    channel: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    overdue: int = 0
    most_overdue_seconds: float | None = None

    @property
    def waiting(self) -> int:
        """Queued and retrying tasks."""
        return self.counts["queued"] + self.counts["retrying"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "waiting": self.waiting}


def task_counts() -> dict[tuple[str, str], int]:
    """(channel, status) -> number of stored tasks."""
    rows = TaskRecord.objects.values_list("channel", "status").annotate(n=Count("pk"))
    return {(channel, status): n for channel, status, n in rows.order_by()}


def backlog(now: datetime | None = None) -> list[ChannelBacklog]:
    """Every channel with stored tasks, by name."""
    now = now or timezone.now()
    channels: dict[str, ChannelBacklog] = {}
    for (channel, status), n in task_counts().items():
        channels.setdefault(channel, ChannelBacklog(channel)).counts[status] = n
    overdue = (
        TaskRecord.objects.filter(status__in=WAITING, due_at__lte=now)
        .values_list("channel")
        .annotate(n=Count("pk"), oldest=Min("due_at"))
        .order_by()
    )
    for channel, n, oldest in overdue:
        entry = channels.setdefault(channel, ChannelBacklog(channel))
        entry.overdue = n
        entry.most_overdue_seconds = (now - oldest).total_seconds()
    return [channels[name] for name in sorted(channels)]


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process and whether it is live."""

    id: str
    host: str
    pid: int
    channels: list[str]
    concurrency: int
    running: list[str]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    live: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["heartbeat_at"] = self.heartbeat_at.isoformat()
        return data


def workers(now: datetime | None = None) -> list[WorkerInfo]:
    """Every registered worker, live or not, by host and pid.

    A worker that stopped cleanly has removed itself; one that is listed but not
    live died without a word (its attempts are taken back when their leases
    expire).
    """
    now = now or timezone.now()
    live_since = now - timedelta(seconds=LIVE_AFTER)
    return [
        WorkerInfo(
            id=w.id,
            host=w.host,
            pid=w.pid,
            channels=list(w.channels),
            concurrency=w.concurrency,
            running=list(w.running),
            started_at=w.started_at,
            heartbeat_at=w.heartbeat_at,
            heartbeat_age=max(0.0, (now - w.heartbeat_at).total_seconds()),
            live=w.heartbeat_at >= live_since,
        )
        for w in WorkerRecord.objects.order_by("host", "pid")
    ]
