"""The dashboard's page, its chart endpoint and the script's row actions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from retrying_consumers.models import Status, TaskRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def logged_in(name: str, staff: bool = False) -> tuple[Any, Client]:
    """A signed-in user; staff here hold every task permission."""
    person = get_user_model().objects.create_user(name, is_staff=staff)
    if staff:
        person.user_permissions.add(
            *Permission.objects.filter(content_type__model="taskrecord")
        )
    client = Client()
    client.force_login(person)
    return person, client


def test_the_page_shows_a_page_of_tasks_with_the_total() -> None:
    _, client = logged_in("boss", staff=True)
    TaskRecord.objects.bulk_create(
        TaskRecord(channel="c", type=f"job.{i}", status=Status.DEAD) for i in range(30)
    )
    page = client.get(reverse("dashboard"), {"per": "25", "page": "2"})
    html = page.content.decode()
    assert page.context["page"].total == 30
    assert len(page.context["tasks"]) == 5
    assert '26\u201330</span> of <strong id="list-total">30</strong>' in html
    assert html.count('<tr data-task-id="') == 5
    config = page.context["page_config"]
    assert (config["number"], config["size"], config["total"]) == (2, 25, 30)
    assert "Dead <span" in html  # the Dead view, with its count


def test_bad_list_parameters_fall_back_to_defaults() -> None:
    _, client = logged_in("boss", staff=True)
    page = client.get(
        reverse("dashboard"),
        {"sort": "nope", "dir": "sideways", "page": "-3", "per": "7", "status": "x"},
    )
    assert page.status_code == 200
    params = page.context["params"]
    assert (params["sort"], params["dir"], params["status"]) == ("created", "desc", "")
    assert page.context["page"].number == 1 and page.context["page"].size == 25


def test_the_chart_endpoint_counts_only_what_the_user_may_see() -> None:
    ada, client = logged_in("ada")
    other, _ = logged_in("bob")
    now = timezone.now()
    for owner, status in (
        (ada, Status.SUCCEEDED),
        (ada, Status.DEAD),
        (other, Status.DEAD),
    ):
        TaskRecord.objects.create(
            channel="c",
            type="t",
            owner=owner,
            status=status,
            finished_at=now - timedelta(minutes=20),
        )
    data = client.get(reverse("chart"), {"range": "hour"}).json()
    assert (data["range"], sum(data["succeeded"]), sum(data["dead"])) == ("hour", 1, 1)
    assert sum(client.get(reverse("chart")).json()["dead"]) == 0  # 5 min: too old
    assert Client().get(reverse("chart")).status_code == 302  # log in first


def test_the_script_gets_json_from_row_actions() -> None:
    _, client = logged_in("boss", staff=True)
    task = TaskRecord.objects.create(channel="c", type="t", status=Status.QUEUED)
    url = reverse("task-action", args=[task.pk, "cancel"])
    answer = client.post(url, HTTP_X_REQUESTED_WITH="fetch")
    assert answer.status_code == 200 and answer.json()["ok"] is True
    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    running = TaskRecord.objects.create(channel="c", type="t", status=Status.RUNNING)
    url = reverse("task-action", args=[running.pk, "retry"])
    refused = client.post(url, HTTP_X_REQUESTED_WITH="fetch")
    assert refused.status_code == 409 and refused.json()["ok"] is False


@pytest.mark.parametrize("name", ["dashboard", "schedules", "progress-example"])
def test_pages_run_no_inline_script_and_style_only_with_the_nonce(name: str) -> None:
    _, client = logged_in("boss", staff=True)
    page = client.get(reverse(name))
    html = page.content.decode()
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    nonce = re.search(r"'nonce-([^']+)'", policy)
    for tag in re.findall(r"<style\b[^>]*>", html):
        assert nonce is not None and f'nonce="{nonce.group(1)}"' in tag, tag


def test_row_buttons_show_only_the_actions_the_user_may_take() -> None:
    looker = get_user_model().objects.create_user("looker", is_staff=True)
    looker.user_permissions.add(Permission.objects.get(codename="view_taskrecord"))
    client = Client()
    client.force_login(looker)
    TaskRecord.objects.create(channel="c", type="job.x", status=Status.DEAD)
    html = client.get(reverse("dashboard")).content.decode()
    assert 'data-task-id="' in html, "they may see every task"
    assert 'data-action="retry"' not in html and 'data-action="delete"' not in html
    _, boss = logged_in("boss", staff=True)
    html = boss.get(reverse("dashboard")).content.decode()
    assert 'data-action="retry"' in html and 'data-action="delete"' in html
