"""Page actions and the "all" scope follow the admin's model permissions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse

from realtime import permissions, queries
from retrying_consumers import retry_now, store
from retrying_consumers.deletion import delete_finished
from retrying_consumers.models import ACTIVE, FINAL, Status, TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def staff(name: str, *codenames: str, active: bool = True) -> Any:
    user = get_user_model().objects.create_user(
        name, password="x", is_staff=True, is_active=active
    )
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return get_user_model().objects.get(pk=user.pk)  # no cached permissions


def task(owner: Any, status: str = Status.QUEUED) -> TaskRecord:
    record, _ = store.create_task(
        channel="work", type="job.run", payload={}, ring_timeout=30, owner_id=owner.pk
    )
    TaskRecord.objects.filter(pk=record.pk).update(status=status)
    return record


def post(who: Any, record: TaskRecord, action: str) -> Any:
    client = Client()
    client.force_login(who)
    return client.post(reverse("task-action", args=[record.id, action]))


def status_of(record: TaskRecord) -> str | None:
    found = TaskRecord.objects.filter(pk=record.pk).first()
    return None if found is None else str(found.status)


@pytest.mark.parametrize("action", ["retry", "cancel", "delete"])
@pytest.mark.parametrize("codenames", [(), ("view_taskrecord",)])
def test_staff_without_the_permission_cannot_act(
    action: str, codenames: tuple[str, ...]
) -> None:
    owner = staff("owner")
    record = task(owner, Status.DEAD if action != "cancel" else Status.QUEUED)
    before = status_of(record)
    response = post(staff("clerk", *codenames), record, action)
    assert response.status_code == 403
    assert status_of(record) == before


def test_change_permission_retries_and_cancels_but_does_not_delete() -> None:
    clerk = staff("clerk", "change_taskrecord")
    record = task(clerk)
    assert post(clerk, record, "cancel").status_code == 302
    assert status_of(record) == Status.CANCELLED
    assert post(clerk, record, "retry").status_code == 302
    assert status_of(record) == Status.QUEUED
    assert post(clerk, record, "delete").status_code == 403
    assert status_of(record) == Status.QUEUED


def test_an_inactive_staff_account_cannot_act() -> None:
    clerk = staff("clerk", "change_taskrecord", active=True)
    record = task(clerk)
    get_user_model().objects.filter(pk=clerk.pk).update(is_active=False)
    assert not permissions.may_act(get_user_model().objects.get(pk=clerk.pk), "cancel")
    assert status_of(record) == Status.QUEUED


@pytest.mark.parametrize("status", FINAL)
def test_delete_permission_deletes_finished_tasks(status: str) -> None:
    keeper = staff("keeper", "delete_taskrecord")
    record = task(keeper, status)
    assert post(keeper, record, "delete").status_code == 302
    assert status_of(record) is None


@pytest.mark.parametrize("status", ACTIVE)
def test_the_page_refuses_to_delete_unfinished_tasks(status: str) -> None:
    keeper = staff("keeper", "delete_taskrecord")
    record = task(keeper, status)
    client = Client()
    client.force_login(keeper)
    response = client.post(
        reverse("task-action", args=[record.id, "delete"]), follow=True
    )
    assert status_of(record) == status
    assert any("cancel it first" in str(m) for m in response.context["messages"])


@pytest.mark.parametrize("status", ACTIVE)
def test_the_admin_delete_hooks_refuse_unfinished_tasks(status: str) -> None:
    keeper = staff("keeper", "delete_taskrecord")
    unfinished, finished = task(keeper, status), task(keeper, Status.DEAD)
    model_admin = admin.site._registry[TaskRecord]
    request = RequestFactory().post("/")
    request.user = keeper
    request._messages = _Messages()  # type: ignore[attr-defined]
    model_admin.delete_model(request, TaskRecord.objects.get(pk=unfinished.pk))
    model_admin.delete_queryset(request, TaskRecord.objects.all())
    assert status_of(unfinished) == status
    assert status_of(finished) is None
    assert request._messages.texts  # type: ignore[attr-defined]


def test_a_task_re_driven_after_it_was_chosen_is_not_deleted() -> None:
    keeper = staff("keeper", "delete_taskrecord", "change_taskrecord")
    record = task(keeper, Status.DEAD)
    chosen = TaskRecord.objects.filter(pk=record.pk)  # the admin's selection
    retry_now(record.id)  # someone re-drives it before the delete runs
    outcome = delete_finished(chosen.values_list("pk", flat=True))
    assert outcome.deleted == () and outcome.unfinished == (record.pk,)
    assert status_of(record) == Status.QUEUED


def test_seeing_all_tasks_needs_the_view_or_change_permission() -> None:
    owner = staff("owner")
    task(owner)
    bare, viewer = staff("bare"), staff("v", "view_taskrecord")
    changer = staff("c", "change_taskrecord")
    assert not permissions.may_see_all(bare)
    assert permissions.may_see_all(viewer) and permissions.may_see_all(changer)
    assert queries.visible_tasks(bare).count() == 0
    assert queries.visible_tasks(viewer).count() == 1
    client = Client()
    client.force_login(bare)
    assert client.get(reverse("dashboard")).context["scope"] == "mine"


class _Messages:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, level: int, message: str, extra_tags: str = "") -> None:
        self.texts.append(message)
