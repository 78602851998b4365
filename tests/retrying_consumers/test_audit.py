"""The audit trail: who retried, cancelled or deleted a task, when and from where,
recorded by the page's functions, the admin and ``manage.py tasks``."""

from __future__ import annotations

import getpass
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from retrying_consumers import audit, store
from retrying_consumers.exceptions import TaskNotFound
from retrying_consumers.models import Status, TaskAuditRecord, TaskRecord
from tests.retrying_consumers.ops_factories import make

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Any:
    return get_user_model().objects.create_user(
        "alice", password="pw-alice", is_staff=True, is_superuser=True
    )


def fresh(task: TaskRecord) -> TaskRecord:
    return TaskRecord.objects.get(pk=task.pk)


def entries(task: TaskRecord) -> list[TaskAuditRecord]:
    return list(audit.trail(task.pk))


# The store: a manual retry leaves no stale reason ---------------------------------


@pytest.mark.parametrize("status", [Status.DEAD, Status.CANCELLED, Status.RETRYING])
def test_retry_now_replaces_the_reason_it_is_given(status: str) -> None:
    task = make(status, attempts=3)
    assert task.reason  # "attempts exhausted", "cancelled", "retry in 600 s"
    again = store.retry_now(task.pk, ring_timeout=30, reason="retried by ada")
    assert again.status == Status.QUEUED
    assert fresh(task).reason == "retried by ada"


@pytest.mark.parametrize("status", [Status.DEAD, Status.RETRYING])
def test_retry_now_without_a_reason_clears_the_old_one(status: str) -> None:
    task = make(status, attempts=2)
    store.retry_now(task.pk, ring_timeout=30)
    assert fresh(task).reason == ""


# The audit functions --------------------------------------------------------------


def test_redrive_of_a_dead_task_is_recorded_and_named_in_the_reason(
    alice: Any,
) -> None:
    task = make(Status.DEAD, attempts=3)
    before = timezone.now()
    again = audit.retry_now(task.pk, audit.Actor.of(alice, "page"))
    after = timezone.now()

    assert again.status == Status.QUEUED and again.drive_offset == 3
    assert again.finished_at is None
    [entry] = entries(task)
    assert (entry.action, entry.source, entry.actor, entry.actor_name) == (
        "redrive",
        "page",
        alice,
        "alice",
    )
    assert before <= entry.at <= after
    assert "dead" in entry.detail and "3" in entry.detail
    stored = fresh(task).reason
    assert stored.startswith("re-driven by alice at ")
    assert audit.stamp(entry.at) in stored
    assert "exhausted" not in stored


def test_retry_of_a_waiting_task_is_a_retry_not_a_redrive(alice: Any) -> None:
    task = make(Status.RETRYING, attempts=1)
    audit.retry_now(task.pk, audit.Actor.of(alice, "admin"))
    [entry] = entries(task)
    assert entry.action == "retry" and entry.source == "admin"
    assert fresh(task).reason.startswith("retried by alice at ")
    assert fresh(task).status == Status.QUEUED


def test_a_refused_retry_records_nothing(alice: Any) -> None:
    task = make(Status.SUCCEEDED)
    with pytest.raises(ValueError):
        audit.retry_now(task.pk, audit.Actor.of(alice, "page"))
    with pytest.raises(TaskNotFound):
        audit.retry_now(
            "00000000-0000-0000-0000-000000000000", audit.Actor.of(alice, "page")
        )
    assert not TaskAuditRecord.objects.exists()


def test_cancel_is_recorded_once_and_not_for_a_finished_task(alice: Any) -> None:
    task = make(Status.QUEUED)
    done = audit.cancel(task.pk, audit.Actor.of(alice, "page"))
    assert done.status == Status.CANCELLED
    assert done.reason.startswith("cancelled by alice at ")
    again = audit.cancel(task.pk, audit.Actor.of(alice, "page"))
    assert again.status == Status.CANCELLED
    assert [e.action for e in entries(task)] == ["cancel"]


def test_the_trail_of_a_deleted_task_and_user_survives(alice: Any) -> None:
    task = make(Status.DEAD)
    audit.retry_now(task.pk, audit.Actor.of(alice, "page"))
    audit.cancel(task.pk, audit.Actor.of(alice, "page"))
    audit.delete(task.pk, audit.Actor.of(alice, "page"))
    assert not TaskRecord.objects.filter(pk=task.pk).exists()
    alice.delete()
    trail = list(audit.trail(task.pk))
    assert [e.action for e in trail] == ["redrive", "cancel", "delete"]
    assert all(e.actor is None and e.actor_name == "alice" for e in trail)
    with pytest.raises(TaskNotFound):
        audit.delete(task.pk, audit.Actor())


def test_an_anonymous_actor_is_someone() -> None:
    task = make(Status.DEAD)
    audit.retry_now(task.pk, audit.Actor())
    [entry] = entries(task)
    assert entry.source == "api" and entry.actor_name == ""
    assert fresh(task).reason.startswith("re-driven by someone at ")


def test_an_action_tells_the_task_page_at_once(
    alice: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    published: list[dict[str, Any]] = []

    async def spy(task: TaskRecord, event: Any = None) -> None:
        published.append(task.to_event())

    monkeypatch.setattr(audit.events, "apublish", spy)
    task = make(Status.DEAD)
    with django_capture_on_commit_callbacks(execute=True):
        audit.retry_now(task.pk, audit.Actor.of(alice, "page"))
    [event] = [e for e in published if e["id"] == str(task.pk)]
    assert event["reason"].startswith("re-driven by alice")
    assert event["status"] in (Status.QUEUED, Status.RUNNING)


# Where actions come from: the page, the admin, the command -------------------------


def test_the_task_page_actions_record_the_signed_in_user(alice: Any) -> None:
    client = Client()
    client.force_login(alice)
    dead, queued, old = make(Status.DEAD), make(Status.QUEUED), make(Status.DEAD)
    for task, action in ((dead, "retry"), (queued, "cancel"), (old, "delete")):
        url = reverse("task-action", args=[task.pk, action])
        assert client.post(url).status_code == 302
    assert [(e.action, e.source, e.actor_name) for e in entries(dead)] == [
        ("redrive", "page", "alice")
    ]
    assert [e.action for e in entries(queued)] == ["cancel"]
    assert [e.action for e in entries(old)] == ["delete"]


def test_the_admin_records_its_actions_and_shows_the_trail(alice: Any) -> None:
    client = Client()
    client.force_login(alice)
    changelist = reverse("admin:retrying_consumers_taskrecord_changelist")
    dead, queued, gone = make(Status.DEAD), make(Status.QUEUED), make(Status.DEAD)
    client.post(changelist, {"action": "retry_now", "_selected_action": [dead.pk]})
    client.post(changelist, {"action": "cancel_tasks", "_selected_action": [queued.pk]})
    client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [gone.pk], "post": "yes"},
    )
    assert not TaskRecord.objects.filter(pk=gone.pk).exists()
    got = {
        (str(e.task_id), e.action, e.source, e.actor_name)
        for e in TaskAuditRecord.objects.all()
    }
    assert got == {
        (str(dead.pk), "redrive", "admin", "alice"),
        (str(queued.pk), "cancel", "admin", "alice"),
        (str(gone.pk), "delete", "admin", "alice"),
    }
    page = client.get(
        reverse("admin:retrying_consumers_taskrecord_change", args=[dead.pk])
    ).content.decode()
    assert "re-driven by alice" in page and "audit-trail" in page
    trail = client.get(reverse("admin:retrying_consumers_taskauditrecord_changelist"))
    assert trail.status_code == 200 and str(gone.pk) in trail.content.decode()


def test_the_audit_admin_is_read_only(alice: Any) -> None:
    task = make(Status.DEAD)
    audit.delete(task.pk, audit.Actor.of(alice, "page"))
    entry = TaskAuditRecord.objects.get()
    client = Client()
    client.force_login(alice)
    add = reverse("admin:retrying_consumers_taskauditrecord_add")
    assert client.get(add).status_code == 403
    delete = reverse("admin:retrying_consumers_taskauditrecord_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert TaskAuditRecord.objects.filter(pk=entry.pk).exists()


def test_the_command_records_the_login_name() -> None:
    dead, queued = make(Status.DEAD), make(Status.QUEUED)
    call_command("tasks", "retry", str(dead.pk), stdout=StringIO())
    call_command("tasks", "cancel", str(queued.pk), stdout=StringIO())
    call_command("tasks", "retry", "--dead", stdout=StringIO())  # none left
    name = getpass.getuser()
    assert [(e.action, e.source, e.actor_name) for e in entries(dead)] == [
        ("redrive", "command", name)
    ]
    assert [(e.action, e.source) for e in entries(queued)] == [("cancel", "command")]
    assert fresh(queued).reason == "cancelled from the command line"


def test_a_deletion_tells_the_task_page_too(
    alice: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    published: list[dict[str, Any]] = []

    async def spy(task: TaskRecord, event: Any = None) -> None:
        published.append(event)

    monkeypatch.setattr(audit.events, "apublish", spy)
    task = make(Status.DEAD)
    with django_capture_on_commit_callbacks(execute=True):
        gone = audit.delete(task.pk, audit.Actor.of(alice, "page"))
    assert gone.pk == task.pk
    [event] = published
    assert event["id"] == str(task.pk) and event["deleted"] is True
    assert event["status"] == Status.DEAD
