"""The admin for task records: list, search, detail, and staff-only actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from retrying_consumers.models import Status, TaskRecord
from tests.retrying_consumers.ops_factories import make

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:retrying_consumers_taskrecord_changelist")


def change_url(task: TaskRecord) -> str:
    return reverse("admin:retrying_consumers_taskrecord_change", args=[task.pk])


def button_url(task: TaskRecord, action: str) -> str:
    return reverse(f"admin:retrying_consumers_taskrecord_{action}", args=[task.pk])


def status_of(task: TaskRecord) -> str:
    return TaskRecord.objects.get(pk=task.pk).status


def user_client(*, staff: bool, perms: tuple[str, ...] = ()) -> Client:
    user = get_user_model().objects.create_user(
        "someone", password="pw-not-used", is_staff=staff
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def run_action(client: Client, action: str, *tasks: TaskRecord, **extra: str):
    data = {"action": action, "_selected_action": [str(t.pk) for t in tasks], **extra}
    return client.post(CHANGELIST, data, follow=True)


def page(response) -> str:
    return response.content.decode()


# Finding tasks -------------------------------------------------------------------


def test_list_filters_by_status_channel_type_and_date(admin_client: Client) -> None:
    dead = make(Status.DEAD, channel="mail", type="mail.send")
    ok = make(Status.SUCCEEDED, channel="thumbs", type="thumb.make")
    old = make(Status.QUEUED, channel="thumbs", created_ago=timedelta(days=40))

    listed = page(admin_client.get(CHANGELIST))
    assert all(str(t.pk) in listed for t in (dead, ok, old))
    by_status = page(admin_client.get(CHANGELIST, {"status__exact": "dead"}))
    assert str(dead.pk) in by_status and str(ok.pk) not in by_status
    by_channel = page(admin_client.get(CHANGELIST, {"channel": "thumbs"}))
    assert str(ok.pk) in by_channel and str(dead.pk) not in by_channel
    by_type = page(admin_client.get(CHANGELIST, {"type": "mail.send"}))
    assert str(dead.pk) in by_type and str(ok.pk) not in by_type
    recent = page(
        admin_client.get(
            CHANGELIST, {"created_at__gte": old.created_at + timedelta(days=1)}
        )
    )
    assert str(ok.pk) in recent and str(old.pk) not in recent


def test_search_by_id_type_and_error_text(admin_client: Client) -> None:
    smtp = make(Status.DEAD, type="mail.send", error=("SMTPError", "mailbox full"))
    other = make(Status.DEAD, type="thumb.make", error=("OSError", "disk gone"))

    for term in ("mailbox full", "SMTPError", "mail.send", str(smtp.pk)[:13]):
        found = page(admin_client.get(CHANGELIST, {"q": term}))
        assert str(smtp.pk) in found, term
        assert str(other.pk) not in found, term


def test_detail_shows_payload_progress_and_every_attempt(admin_client: Client) -> None:
    task = make(
        Status.DEAD,
        payload={"image": "cat.png"},
        attempts=2,
        error=("ConnectionError", "service unavailable"),
    )
    TaskRecord.objects.filter(pk=task.pk).update(
        progress_current=3, progress_total=4, progress_message="resizing"
    )

    html = page(admin_client.get(change_url(task)))

    assert "cat.png" in html
    assert "3 / 4 (75%) resizing" in html
    assert html.count("ConnectionError: service unavailable") == 2  # two tracebacks
    assert "File &quot;jobs.py&quot;, line 7" in html
    assert "Retry now" in html and "Cancel task" not in html
    assert 'name="_save"' not in html  # nothing to save: every field is read-only


# Acting on tasks as staff -----------------------------------------------------------


def test_staff_retry_now_action_redrives_dead_tasks(admin_client: Client) -> None:
    dead = make(Status.DEAD)
    done = make(Status.SUCCEEDED)

    response = run_action(admin_client, "retry_now", dead, done)

    assert status_of(dead) == Status.QUEUED
    assert status_of(done) == Status.SUCCEEDED
    messages = [str(m) for m in response.context["messages"]]
    assert "1 task(s) retried." in messages
    assert any("cannot be retried now" in m for m in messages)


def test_staff_cancel_action_cancels_unfinished_tasks(admin_client: Client) -> None:
    waiting = make(Status.RETRYING)
    done = make(Status.SUCCEEDED)

    response = run_action(admin_client, "cancel_tasks", waiting, done)

    fresh = TaskRecord.objects.get(pk=waiting.pk)
    assert fresh.status == Status.CANCELLED
    assert fresh.reason == "cancelled by admin in the admin"
    assert status_of(done) == Status.SUCCEEDED
    messages = [str(m) for m in response.context["messages"]]
    assert any("already succeeded" in m for m in messages)


def test_staff_delete_action_deletes_finished_tasks_only(admin_client: Client) -> None:
    dead, done, running = make(Status.DEAD), make(Status.SUCCEEDED), make("running")

    confirm = run_action(admin_client, "delete_selected", dead, done, running)
    assert "Are you sure" in page(confirm)
    response = run_action(
        admin_client, "delete_selected", dead, done, running, post="yes"
    )

    assert list(TaskRecord.objects.values_list("pk", flat=True)) == [running.pk]
    messages = [str(m) for m in response.context["messages"]]
    assert any("1 unfinished task(s) left alone" in m for m in messages)


def test_unfinished_task_cannot_be_deleted_from_its_page(admin_client: Client) -> None:
    running = make(Status.RUNNING)
    delete_url = reverse(
        "admin:retrying_consumers_taskrecord_delete", args=[running.pk]
    )
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert status_of(running) == Status.RUNNING


def test_staff_buttons_on_the_task_page(admin_client: Client) -> None:
    queued = make(Status.QUEUED)
    assert "Cancel task" in page(admin_client.get(change_url(queued)))

    response = admin_client.post(button_url(queued, "cancel"))
    assert response.status_code == 302 and response.url == change_url(queued)
    assert status_of(queued) == Status.CANCELLED

    admin_client.post(button_url(queued, "retry_now"))
    assert status_of(queued) == Status.QUEUED


def test_buttons_need_post_and_a_csrf_token(admin_user) -> None:
    task = make(Status.DEAD)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.get(button_url(task, "retry_now")).status_code == 405
    assert client.post(button_url(task, "retry_now")).status_code == 403
    assert client.post(CHANGELIST, {"action": "retry_now"}).status_code == 403
    assert status_of(task) == Status.DEAD


def test_unknown_task_button_goes_back_to_the_list(admin_client: Client) -> None:
    task = make(Status.DEAD)
    url = button_url(task, "retry_now").replace(str(task.pk), "not-a-uuid")
    response = admin_client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == CHANGELIST
    assert any("is not a task id" in str(m) for m in response.context["messages"])


# Refused for everyone else ----------------------------------------------------------


def test_non_staff_are_sent_to_the_login_page_and_change_nothing() -> None:
    client = user_client(staff=False)
    task = make(Status.DEAD)
    running = make(Status.RUNNING)

    for response in (
        client.get(CHANGELIST),
        client.get(change_url(task)),
        client.post(CHANGELIST, {"action": "retry_now", "_selected_action": [task.pk]}),
        client.post(button_url(task, "retry_now")),
        client.post(button_url(running, "cancel")),
    ):
        assert response.status_code == 302
        assert "/admin/login/" in response.url
    assert (status_of(task), status_of(running)) == (Status.DEAD, Status.RUNNING)


def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    task = make(Status.DEAD)
    response = client.post(button_url(task, "retry_now"))
    assert response.status_code == 302 and "/admin/login/" in response.url
    assert status_of(task) == Status.DEAD


def test_view_only_staff_may_look_but_not_act() -> None:
    client = user_client(staff=True, perms=("view_taskrecord",))
    task = make(Status.DEAD, attempts=2)

    html = page(client.get(change_url(task)))
    assert "ConnectionError: refused" in html  # attempts are visible
    assert "Retry now" not in html
    assert client.post(button_url(task, "retry_now")).status_code == 403
    response = run_action(client, "retry_now", task)
    assert response.status_code == 200
    assert status_of(task) == Status.DEAD
    response = run_action(client, "delete_selected", task, post="yes")
    assert TaskRecord.objects.filter(pk=task.pk).exists()


def test_nobody_adds_tasks_through_the_admin(admin_client: Client) -> None:
    add = reverse("admin:retrying_consumers_taskrecord_add")
    assert admin_client.get(add).status_code == 403
