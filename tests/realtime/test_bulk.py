"""Retry, cancel and delete everything matching the dashboard's filter."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from realtime import bulk
from retrying_consumers import audit, events
from retrying_consumers.models import Status, TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every task event the page would be sent."""
    sent: list[dict[str, Any]] = []
    real = events.apublish

    async def spy(task: TaskRecord, event: dict[str, Any] | None = None) -> Any:
        sent.append(event or task.to_event())
        return await real(task, event)

    monkeypatch.setattr(events, "apublish", spy)
    # The test's transaction never commits: announce as if it had.
    monkeypatch.setattr(
        audit.transaction, "on_commit", lambda func, robust=False: func()
    )
    return sent


def operator(*perms: str, staff: bool = True) -> Any:
    person = get_user_model().objects.create_user(
        f"op{len(perms)}{staff}", password="x", is_staff=staff
    )
    for codename in perms:
        person.user_permissions.add(Permission.objects.get(codename=codename))
    return get_user_model().objects.get(pk=person.pk)  # fresh permission cache


def everything() -> Any:
    return operator("change_taskrecord", "delete_taskrecord")


def tasks(n: int, status: str, **fields: Any) -> list[TaskRecord]:
    made = [
        TaskRecord(channel="work", type="job.run", status=status, **fields)
        for _ in range(n)
    ]
    return TaskRecord.objects.bulk_create(made)


def client_for(person: Any, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(person)
    return client


def test_retry_of_every_dead_task_in_batches_loses_none(
    published: list[dict[str, Any]],
) -> None:
    dead = tasks(bulk.BATCH * 2 + 7, Status.DEAD, attempt=3, error_class="Boom")
    tasks(5, Status.DEAD, attempt=3, error_class="Other")
    tasks(4, Status.SUCCEEDED)
    outcome = bulk.run(everything(), "retry", {"status": "dead", "error": "Boom"})
    assert (outcome.done, outcome.skipped) == (len(dead), 0)
    redriven = TaskRecord.objects.filter(pk__in=[t.pk for t in dead])
    assert set(redriven.values_list("status", flat=True)) == {Status.QUEUED}
    assert set(redriven.values_list("drive_offset", flat=True)) == {3}
    assert TaskRecord.objects.filter(status=Status.DEAD).count() == 5
    assert {e["id"] for e in published} == {str(t.pk) for t in dead}
    assert str(outcome) == f"{len(dead)} tasks retried"


def test_cancel_touches_only_unfinished_matching_tasks() -> None:
    waiting = tasks(3, Status.QUEUED) + tasks(2, Status.RETRYING)
    done = tasks(2, Status.SUCCEEDED)
    outcome = bulk.run(everything(), "cancel", {})
    assert outcome.done == 5
    assert set(
        TaskRecord.objects.filter(pk__in=[t.pk for t in waiting]).values_list(
            "status", flat=True
        )
    ) == {Status.CANCELLED}
    assert set(
        TaskRecord.objects.filter(pk__in=[t.pk for t in done]).values_list(
            "status", flat=True
        )
    ) == {Status.SUCCEEDED}


def test_delete_never_removes_queued_running_or_waiting_tasks(
    published: list[dict[str, Any]],
) -> None:
    unfinished = (
        tasks(2, Status.QUEUED) + tasks(2, Status.RUNNING) + tasks(2, Status.RETRYING)
    )
    finished = tasks(3, Status.DEAD) + tasks(3, Status.CANCELLED)
    outcome = bulk.run(everything(), "delete", {})
    assert outcome.done == 6
    left = set(TaskRecord.objects.values_list("pk", flat=True))
    assert left == {t.pk for t in unfinished}
    assert {e["id"] for e in published} == {str(t.pk) for t in finished}
    assert all(e["deleted"] for e in published)


def test_actions_need_staff_and_the_model_permission() -> None:
    assert not bulk.allowed(operator("change_taskrecord", staff=False), "retry")
    changer = operator("change_taskrecord")
    assert bulk.allowed(changer, "retry") and bulk.allowed(changer, "cancel")
    assert not bulk.allowed(changer, "delete")
    assert not bulk.allowed(operator(), "cancel")
    with pytest.raises(PermissionError):
        bulk.run(changer, "delete", {})
    tasks(1, Status.DEAD)
    response = client_for(changer).post(
        reverse("bulk-action", args=["delete"]), {"confirm": "yes"}
    )
    assert response.status_code == 403
    assert TaskRecord.objects.count() == 1


def test_the_page_asks_with_the_count_then_acts_and_says_what_it_did() -> None:
    tasks(4, Status.DEAD, error_class="Boom")
    tasks(2, Status.DEAD, error_class="Other")
    client = client_for(everything())
    url = reverse("bulk-action", args=["retry"])
    asked = client.get(url, {"status": "dead", "error": "Boom"})
    assert asked.status_code == 200
    assert b"Retry 4 tasks" in asked.content
    assert TaskRecord.objects.filter(status=Status.DEAD).count() == 6  # not yet
    done = client.post(
        url, {"status": "dead", "error": "Boom", "confirm": "yes"}, follow=True
    )
    assert b"4 tasks retried" in done.content
    assert TaskRecord.objects.filter(status=Status.DEAD).count() == 2


def test_bulk_posts_need_a_csrf_token() -> None:
    tasks(2, Status.DEAD)
    client = client_for(everything(), csrf=True)
    response = client.post(reverse("bulk-action", args=["delete"]), {"confirm": "yes"})
    assert response.status_code == 403
    assert TaskRecord.objects.count() == 2


def test_unknown_bulk_action_is_404() -> None:
    response = client_for(everything()).get(reverse("bulk-action", args=["melt"]))
    assert response.status_code == 404
