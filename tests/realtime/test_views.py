"""The pages and the staff actions over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from retrying_consumers import store
from retrying_consumers.models import Status, TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def user(name: str, staff: bool = False) -> Any:
    """A user; staff here hold every task permission (tests/realtime/
    test_permissions.py covers staff without them)."""
    made = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    if staff:
        made.user_permissions.add(
            *Permission.objects.filter(content_type__model="taskrecord")
        )
    return made


def client_for(who: Any, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(who)
    return client


def task(owner: Any, type: str = "job.run", channel: str = "work") -> TaskRecord:
    record, _ = store.create_task(
        channel=channel, type=type, payload={"n": 1}, ring_timeout=30, owner_id=owner.pk
    )
    return record


def test_anonymous_is_sent_to_log_in() -> None:
    response = Client().get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_user_lists_only_their_tasks_and_cannot_open_others() -> None:
    alice, bob = user("alice"), user("bob")
    mine, theirs = task(alice, "job.mine"), task(bob, "job.theirs")
    client = client_for(alice)
    page = client.get(reverse("dashboard")).content.decode()
    assert "job.mine" in page and "job.theirs" not in page
    assert client.get(reverse("task-detail", args=[mine.id])).status_code == 200
    assert client.get(reverse("task-detail", args=[theirs.id])).status_code == 404


def test_filters_by_status_channel_and_text() -> None:
    boss = user("boss", staff=True)
    task(boss, "job.alpha", "one")
    task(boss, "job.beta", "two")
    dead = task(boss, "job.gamma", "two")
    TaskRecord.objects.filter(pk=dead.pk).update(status=Status.DEAD)
    client = client_for(boss)

    def listed(**query: str) -> set[str]:
        page = client.get(reverse("dashboard"), query).content.decode()
        return {name for name in ("job.alpha", "job.beta", "job.gamma") if name in page}

    assert listed() == {"job.alpha", "job.beta", "job.gamma"}
    assert listed(channel="two") == {"job.beta", "job.gamma"}
    assert listed(status="dead") == {"job.gamma"}
    assert listed(q="alph") == {"job.alpha"}
    assert listed(q=str(dead.id)) == {"job.gamma"}
    assert listed(status="nonsense") == {"job.alpha", "job.beta", "job.gamma"}


def test_task_page_shows_payload_attempts_and_traceback() -> None:
    boss = user("boss", staff=True)
    record = task(boss)
    store.claim(record.id, 1, worker="w:1", lease_seconds=30, default_max_attempts=3)
    failure = store.Failure("failed", "KeyError", "'n'", "Traceback (most recent...)")
    from retrying_consumers.policy import Action, Decision

    store.fail(
        record.id,
        1,
        worker="w:1",
        failure=failure,
        decision=Decision(Action.RETRY, 30, "backoff"),
    )
    page = (
        client_for(boss).get(reverse("task-detail", args=[record.id])).content.decode()
    )
    assert "&quot;n&quot;: 1" in page
    assert "attempt 1 of 3" in page
    assert "KeyError" in page and "Traceback (most recent...)" in page
    assert "next try" in page


@pytest.mark.parametrize("action", ["retry", "cancel", "delete"])
def test_actions_are_refused_to_non_staff(action: str) -> None:
    alice = user("alice")
    record = task(alice)
    response = client_for(alice).post(reverse("task-action", args=[record.id, action]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert TaskRecord.objects.get(pk=record.pk).status == Status.QUEUED


def test_actions_need_post_and_a_csrf_token() -> None:
    boss = user("boss", staff=True)
    record = task(boss)
    url = reverse("task-action", args=[record.id, "cancel"])
    assert client_for(boss).get(url).status_code == 405
    assert client_for(boss, csrf=True).post(url).status_code == 403
    assert TaskRecord.objects.get(pk=record.pk).status == Status.QUEUED


def test_staff_cancel_retry_and_delete() -> None:
    boss = user("boss", staff=True)
    record = task(boss)
    client = client_for(boss)
    client.post(reverse("task-action", args=[record.id, "cancel"]))
    cancelled = TaskRecord.objects.get(pk=record.pk)
    assert cancelled.status == Status.CANCELLED
    assert cancelled.reason.startswith("cancelled by boss at ")
    client.post(reverse("task-action", args=[record.id, "retry"]))
    assert TaskRecord.objects.get(pk=record.pk).status == Status.QUEUED
    client.post(reverse("task-action", args=[record.id, "delete"]))
    assert TaskRecord.objects.filter(pk=record.pk).exists()  # unfinished: kept
    client.post(reverse("task-action", args=[record.id, "cancel"]))
    client.post(reverse("task-action", args=[record.id, "delete"]))
    assert not TaskRecord.objects.filter(pk=record.pk).exists()


def test_bad_actions_and_unknown_tasks() -> None:
    boss = user("boss", staff=True)
    record = task(boss)
    client = client_for(boss)
    assert (
        client.post(reverse("task-action", args=[record.id, "explode"])).status_code
        == 404
    )
    import uuid

    missing = uuid.uuid4()
    for action in ("retry", "cancel", "delete"):
        url = reverse("task-action", args=[missing, action])
        assert client.post(url).status_code == 404
    running = task(boss)
    TaskRecord.objects.filter(pk=running.pk).update(status=Status.RUNNING)
    response = client.post(
        reverse("task-action", args=[running.id, "retry"]), follow=True
    )
    assert "cannot be retried now" in response.content.decode()


def test_start_example_is_staff_only_and_owned_by_the_starter() -> None:
    boss, alice = user("boss", staff=True), user("alice")
    url = reverse("start-example")
    client_for(alice).post(url, {"example": "flaky"})
    assert not TaskRecord.objects.exists()
    client_for(boss).post(url, {"example": "flaky"})
    started = TaskRecord.objects.get()
    assert (started.type, started.channel, started.owner) == (
        "example.flaky",
        "examples",
        boss,
    )
    response = client_for(boss).post(url, {"example": "nope"}, follow=True)
    assert "Unknown example" in response.content.decode()
    assert TaskRecord.objects.count() == 1


def test_next_must_stay_on_this_site() -> None:
    boss = user("boss", staff=True)
    record = task(boss)
    response = client_for(boss).post(
        reverse("task-action", args=[record.id, "cancel"]),
        {"next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("dashboard")
