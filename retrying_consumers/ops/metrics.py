"""Prometheus metrics, read from the store at each scrape.

Workers run in many processes on many hosts, so in-process counters would each
see a fraction of the work; the store sees all of it. Every number here is
therefore a gauge computed from the store when Prometheus scrapes ``/metrics``
(it drops when retention purges old records). See ``docs/operations.md`` for
what each metric means and example alerts.

The endpoint answers staff sessions and requests that carry
``Authorization: Bearer <RETRYING_CONSUMERS["METRICS_TOKEN"]>``; anyone else
gets 401 (anonymous) or 403 (logged in, not staff).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..core.conf import library_settings
from ..models import FINAL, TaskRecord
from . import reports

PREFIX = "retrying_consumers"
#: Task durations cover the tasks that finished within this many seconds.
DURATION_WINDOW = 300.0
#: Upper bounds (seconds) of the task duration buckets, enqueue to end.
DURATION_BUCKETS = (
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0,
)  # fmt: skip


class StoreCollector(Collector):
    """Collects the task, attempt, duration and worker metrics from the store."""

    def __init__(
        self,
        now: Callable[[], datetime] = timezone.now,
        window: float = DURATION_WINDOW,
    ) -> None:
        self.now = now
        self.window = window

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family; runs a handful of grouped queries."""
        now = self.now()
        yield from self._tasks()
        yield self._types()
        yield from self._overdue(now)
        yield self._durations(now)
        yield from self._workers(now)

    def _tasks(self) -> Iterator[Metric]:
        labels = ["channel", "status"]
        tasks = GaugeMetricFamily(
            f"{PREFIX}_tasks", "Stored tasks by channel and status.", labels=labels
        )
        attempts = GaugeMetricFamily(
            f"{PREFIX}_attempts",
            "Attempts started by the stored tasks, by channel and task status.",
            labels=labels,
        )
        retries = GaugeMetricFamily(
            f"{PREFIX}_retries",
            "Attempts after the first one, by channel and task status.",
            labels=labels,
        )
        rows = (
            TaskRecord.objects.values_list("channel", "status")
            .annotate(
                n=Count("pk"),
                attempts=Sum("attempt"),
                started=Count("pk", filter=Q(attempt__gt=0)),
            )
            .order_by("channel", "status")
        )
        for channel, status, n, started_attempts, started in rows:
            tasks.add_metric([channel, status], n)
            attempts.add_metric([channel, status], started_attempts or 0)
            retries.add_metric([channel, status], (started_attempts or 0) - started)
        yield from (tasks, attempts, retries)

    def _types(self) -> Metric:
        # Django tasks have a type per function (django.task.<module path>),
        # so this singles out one function's backlog and failures.
        by_type = GaugeMetricFamily(
            f"{PREFIX}_tasks_by_type",
            "Stored tasks by type and status.",
            labels=["type", "status"],
        )
        rows = (
            TaskRecord.objects.values_list("type", "status")
            .annotate(n=Count("pk"))
            .order_by("type", "status")
        )
        for kind, status, n in rows:
            by_type.add_metric([kind, status], n)
        return by_type

    def _overdue(self, now: datetime) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            f"{PREFIX}_overdue_tasks",
            "Waiting tasks past their due time that no worker has claimed.",
            labels=["channel"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_overdue_seconds",
            "How long the most overdue waiting task of the channel has waited.",
            labels=["channel"],
        )
        for entry in reports.backlog(now):
            count.add_metric([entry.channel], entry.overdue)
            age.add_metric([entry.channel], entry.most_overdue_seconds or 0.0)
        yield from (count, age)

    def _durations(self, now: datetime) -> Metric:
        histogram = GaugeHistogramMetricFamily(
            f"{PREFIX}_task_duration_seconds",
            f"Enqueue-to-end time of the tasks that finished in the last "
            f"{self.window:g} s, by channel and final status.",
            labels=["channel", "status"],
        )
        duration = ExpressionWrapper(
            F("finished_at") - F("created_at"), output_field=DurationField()
        )
        buckets = {
            f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        rows = (
            TaskRecord.objects.filter(
                status__in=FINAL,
                finished_at__gte=now - timedelta(seconds=self.window),
            )
            .annotate(duration=duration)
            .values("channel", "status")
            .annotate(total=Count("pk"), seconds=Sum("duration"), **buckets)
            .order_by("channel", "status")
        )
        for row in rows:
            counts = [
                (str(float(bound)), row[f"le_{i}"])  # "1.0", as the client does
                for i, bound in enumerate(DURATION_BUCKETS)
            ]
            counts.append(("+Inf", row["total"]))
            total = row["seconds"]
            histogram.add_metric(
                [row["channel"], row["status"]],
                buckets=counts,
                gsum_value=total.total_seconds() if total is not None else 0.0,
            )
        return histogram

    def _workers(self, now: datetime) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            f"{PREFIX}_workers",
            "Registered worker processes, live (recent heartbeat) or silent.",
            labels=["state"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_worker_heartbeat_age_seconds",
            "Seconds since each registered worker's last heartbeat.",
            labels=["worker", "host"],
        )
        running = GaugeMetricFamily(
            f"{PREFIX}_worker_running",
            "Attempts in flight in each registered worker.",
            labels=["worker"],
        )
        slots = GaugeMetricFamily(
            f"{PREFIX}_worker_concurrency",
            "Attempts each registered worker may run at once.",
            labels=["worker"],
        )
        found = reports.workers(now)
        live.add_metric(["live"], sum(w.live for w in found))
        live.add_metric(["silent"], sum(not w.live for w in found))
        for w in found:
            age.add_metric([w.id, w.host], w.heartbeat_age)
            running.add_metric([w.id], len(w.running))
            slots.add_metric([w.id], w.concurrency)
        yield from (live, age, running, slots)


def render(collector: Collector | None = None) -> bytes:
    """The metrics in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or StoreCollector())
    return generate_latest(registry)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None if the request may read the metrics, else the response refusing it."""
    header = request.headers.get("Authorization", "")
    if header:
        token = library_settings().metrics_token
        scheme, _, given = header.partition(" ")
        if (
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            return None
        return _unauthorized("invalid bearer token\n")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_active and user.is_staff:
            return None
        return HttpResponse("staff only\n", status=403, content_type="text/plain")
    return _unauthorized("log in as staff or send a bearer token\n")


def _unauthorized(text: str) -> HttpResponse:
    response = HttpResponse(text, status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the store's numbers for Prometheus (staff or token)."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
