"""The Prometheus endpoint: who may read it, and that its numbers match the store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from retrying_consumers.conf import library_settings
from retrying_consumers.exceptions import ConfigurationError
from retrying_consumers.metrics import StoreCollector, render
from retrying_consumers.models import Status, TaskRecord
from tests.retrying_consumers.ops_factories import make, worker

pytestmark = pytest.mark.django_db

URL = "/metrics"
TOKEN = "s3cret-token-for-prometheus"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def token(settings) -> str:
    settings.RETRYING_CONSUMERS = {"METRICS_TOKEN": TOKEN}
    return TOKEN


# Who may read ----------------------------------------------------------------------


def test_anonymous_requests_are_refused(client: Client, token: str) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"retrying_consumers" not in response.content


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
)
def test_wrong_tokens_are_refused(client: Client, token: str, header: str) -> None:
    response = client.get(URL, headers={"Authorization": header})
    assert response.status_code == 401


def test_no_token_configured_means_no_token_is_accepted(
    client: Client, settings
) -> None:
    settings.RETRYING_CONSUMERS = {}
    response = client.get(URL, headers={"Authorization": "Bearer None"})
    assert response.status_code == 401
    response = client.get(URL, headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_logged_in_non_staff_are_refused(client: Client, token: str) -> None:
    client.force_login(get_user_model().objects.create_user("reader", password="x"))
    assert client.get(URL).status_code == 403


def test_staff_sessions_and_the_token_may_read(
    client: Client, admin_client: Client, token: str
) -> None:
    make(Status.QUEUED)
    for response in (
        admin_client.get(URL),
        client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        assert "no-cache" in response["Cache-Control"]
        found = samples(response.content.decode())
        assert (
            value(
                found, "retrying_consumers_tasks", channel="examples", status="queued"
            )
            == 1
        )


def test_only_get_and_head(admin_client: Client) -> None:
    assert admin_client.post(URL).status_code == 405


def test_metrics_token_setting_is_validated(settings) -> None:
    settings.RETRYING_CONSUMERS = {"METRICS_TOKEN": ""}
    with pytest.raises(ConfigurationError, match="must be a non-empty string or None"):
        library_settings()


# The numbers -----------------------------------------------------------------------


def test_tasks_attempts_and_retries_match_the_store() -> None:
    make(Status.QUEUED, channel="mail")
    make(Status.QUEUED, channel="mail")
    make(Status.RETRYING, channel="mail", attempts=2)
    make(Status.DEAD, channel="mail", attempts=3)
    make(Status.SUCCEEDED, channel="thumbs", attempts=2)
    make(Status.SUCCEEDED, channel="thumbs")
    make(Status.RUNNING, channel="thumbs")
    make(Status.CANCELLED, channel="thumbs")

    found = samples(render().decode())

    rows = TaskRecord.objects.values_list("channel", "status").annotate(
        n=Count("pk"), attempts=Sum("attempt")
    )
    assert len(rows.order_by()) == 6
    for channel, status, n, attempts in rows.order_by():
        labels = {"channel": channel, "status": status}
        assert value(found, "retrying_consumers_tasks", **labels) == n
        assert value(found, "retrying_consumers_attempts", **labels) == attempts
    # By hand, from what was made above:
    assert (
        value(found, "retrying_consumers_tasks", channel="mail", status="queued") == 2
    )
    assert (
        value(found, "retrying_consumers_attempts", channel="mail", status="dead") == 3
    )
    assert (
        value(found, "retrying_consumers_retries", channel="mail", status="dead") == 2
    )
    assert (
        value(found, "retrying_consumers_retries", channel="mail", status="queued") == 0
    )
    assert (
        value(found, "retrying_consumers_retries", channel="thumbs", status="succeeded")
        == 1
    )


def test_overdue_tasks_per_channel() -> None:
    now = timezone.now()
    late = make(Status.QUEUED, channel="mail")
    make(Status.QUEUED, channel="mail")  # rung 0 s ago; not overdue
    TaskRecord.objects.filter(pk=late.pk).update(due_at=now - timedelta(seconds=90))

    found = samples(render(StoreCollector(now=lambda: now)).decode())

    assert value(found, "retrying_consumers_overdue_tasks", channel="mail") == 1
    assert value(found, "retrying_consumers_overdue_seconds", channel="mail") == 90


def test_durations_of_recently_finished_tasks() -> None:
    now = timezone.now()

    def finished(status: str, took: float, ago: float) -> None:
        task = make(
            status, channel="mail", finished_ago=timedelta(seconds=ago), now=now
        )
        TaskRecord.objects.filter(pk=task.pk).update(
            created_at=task.finished_at - timedelta(seconds=took)
        )

    finished(Status.SUCCEEDED, took=3, ago=10)
    finished(Status.SUCCEEDED, took=100, ago=20)
    finished(Status.DEAD, took=2000, ago=30)
    finished(Status.SUCCEEDED, took=1, ago=3600)  # outside the 300 s window

    found = samples(render(StoreCollector(now=lambda: now, window=300)).decode())

    ok = {"channel": "mail", "status": "succeeded"}
    name = "retrying_consumers_task_duration_seconds"
    assert value(found, f"{name}_bucket", le="1.0", **ok) == 0
    assert value(found, f"{name}_bucket", le="5.0", **ok) == 1
    assert value(found, f"{name}_bucket", le="60.0", **ok) == 1
    assert value(found, f"{name}_bucket", le="300.0", **ok) == 2
    assert value(found, f"{name}_bucket", le="+Inf", **ok) == 2
    assert value(found, f"{name}_gcount", **ok) == 2
    assert value(found, f"{name}_gsum", **ok) == pytest.approx(103)
    dead = {"channel": "mail", "status": "dead"}
    assert value(found, f"{name}_gcount", **dead) == 1
    assert value(found, f"{name}_bucket", le="900.0", **dead) == 0
    assert value(found, f"{name}_bucket", le="3600.0", **dead) == 1


def test_worker_heartbeats() -> None:
    now = timezone.now()
    worker("host-a:11", heartbeat_ago=3, now=now, running=["t1"])
    worker("host-b:22", heartbeat_ago=60, now=now, concurrency=8)

    found = samples(render(StoreCollector(now=lambda: now)).decode())

    assert value(found, "retrying_consumers_workers", state="live") == 1
    assert value(found, "retrying_consumers_workers", state="silent") == 1
    age = "retrying_consumers_worker_heartbeat_age_seconds"
    assert value(found, age, worker="host-a:11", host="host-a") == 3
    assert value(found, age, worker="host-b:22", host="host-b") == 60
    assert value(found, "retrying_consumers_worker_running", worker="host-a:11") == 1
    assert (
        value(found, "retrying_consumers_worker_concurrency", worker="host-b:22") == 8
    )


def test_an_empty_store_still_answers() -> None:
    found = samples(render().decode())
    assert value(found, "retrying_consumers_workers", state="live") == 0
    assert not [key for key in found if key[0] == "retrying_consumers_tasks"]
