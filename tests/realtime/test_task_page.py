"""The task page and its live fragment over HTTP, and the tags they show times with."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from realtime.templatetags import tasks as tags
from retrying_consumers import audit
from retrying_consumers.models import Status, TaskRecord
from tests.retrying_consumers.ops_factories import make

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 12, 3, 14, 2, 3, 456000, tzinfo=UTC)


def user(name: str, staff: bool = False) -> Any:
    """A user; staff here hold every task permission."""
    made = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    if staff:
        made.user_permissions.add(
            *Permission.objects.filter(content_type__model="taskrecord")
        )
    return made


def client_for(who: Any) -> Client:
    client = Client()
    client.force_login(who)
    return client


def owned(task: TaskRecord, owner: Any) -> TaskRecord:
    TaskRecord.objects.filter(pk=task.pk).update(owner=owner)
    return TaskRecord.objects.get(pk=task.pk)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# Times and durations ------------------------------------------------------------


def test_times_have_seconds_and_the_time_zone() -> None:
    assert tags.when(MOMENT) == "2026-12-03 14:02:03 UTC"
    assert tags.when(None) == ""
    with timezone.override(zoneinfo.ZoneInfo("Europe/Paris")):
        assert tags.when(MOMENT) == "2026-12-03 15:02:03 CET"
    html = tags.moment(MOMENT)
    assert 'datetime="2026-12-03T14:02:03.456000+00:00"' in html
    assert ">2026-12-03 14:02:03 UTC</time>" in html
    assert tags.moment(None, "not yet") == "not yet"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.00 s"),
        (0.254, "0.25 s"),
        (1.4, "1.4 s"),
        (9.96, "10.0 s"),
        (42.4, "42 s"),
        (125, "2 min 05 s"),
        (3720, "1 h 02 min"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_like_a_person_would_say_them(seconds: float, text: str) -> None:
    assert tags.seconds_text(seconds) == text
    assert tags.took(MOMENT, MOMENT + timedelta(seconds=seconds)) == text


def test_took_without_both_ends_is_empty() -> None:
    assert tags.took(MOMENT, None) == "" and tags.took(None, MOMENT) == ""


def test_existing_tag_names_still_work() -> None:
    task = make(Status.DEAD, attempts=3)
    assert tags.attempt_text(task) == "attempt 3 of 3"
    assert tags.status_symbol("dead") == "✗"
    assert tags.drive_text(task) == ""


# The page -------------------------------------------------------------------------


def test_the_page_shows_attempts_times_to_the_second_and_durations() -> None:
    boss = user("boss", staff=True)
    task = make(Status.DEAD, attempts=3)
    page = client_for(boss).get(reverse("task-detail", args=[task.pk])).content.decode()
    text = text_of(page)
    assert "attempt 3 of 3" in text
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert re.search(r"took \d+\.\d+ s", text)  # never "took 0 minutes"
    assert "minutes" not in text
    assert page.count("<summary>Traceback</summary>") == 3
    assert "No result: the task is dead (attempts exhausted)" in text
    assert "; gave up." in text and "give_up" not in text
    assert 'src="/static/realtime/task.js"' in page
    assert "<script>" not in page  # no inline script: CSP script-src 'self'


def test_after_retry_now_the_page_says_who_retried_not_why_it_died() -> None:
    boss = user("boss", staff=True)
    task = make(Status.DEAD, attempts=3)
    client = client_for(boss)
    client.post(reverse("task-action", args=[task.pk, "retry"]))
    page = text_of(client.get(reverse("task-detail", args=[task.pk])).content.decode())
    assert "attempts exhausted" not in page.split("Payload")[0]
    assert re.search(r"Reason re-driven by boss at [\d-]+ [\d:]+ UTC", page)
    assert re.search(r"re-driven by boss \(from the task page; was dead", page)


def test_a_redriven_task_that_dies_again_shows_both_counts() -> None:
    task = make(Status.DEAD, attempts=3)
    TaskRecord.objects.filter(pk=task.pk).update(
        attempt=6, max_attempts=6, drive_offset=3, reason="attempts exhausted (3 of 3)"
    )
    page = text_of(
        client_for(user("boss", staff=True))
        .get(reverse("task-detail", args=[task.pk]))
        .content.decode()
    )
    assert "attempt 6 of 6 (3 of 3 since the retry)" in page


def test_the_fragment_is_the_live_part_of_the_page() -> None:
    boss = user("boss", staff=True)
    task = make(Status.SUCCEEDED)
    response = client_for(boss).get(reverse("task-live", args=[task.pk]))
    assert response.status_code == 200
    assert (
        "no-cache" in response["Cache-Control"]
        or "max-age=0" in (response["Cache-Control"])
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="task-live"')
    assert "<html" not in html
    assert "&quot;ok&quot;: 1" in html  # the result
    assert 'data-action="retry" disabled' in html
    # Forms in the fragment come back to the task page, not to the fragment.
    assert f'name="next" value="{reverse("task-detail", args=[task.pk])}"' in html


def test_only_those_who_may_see_the_task_get_its_fragment() -> None:
    alice, bob = user("alice"), user("bob")
    task = owned(make(Status.QUEUED), alice)
    url = reverse("task-live", args=[task.pk])
    assert client_for(alice).get(url).status_code == 200
    assert client_for(bob).get(url).status_code == 404
    assert Client().get(url).status_code == 302
    assert client_for(alice).post(url).status_code == 405
    body = client_for(alice).get(url).content.decode()
    assert "data-live-actions" not in body  # no buttons for non-staff


def test_a_deleted_task_fragment_is_404_and_its_trail_survives() -> None:
    boss = user("boss", staff=True)
    task = make(Status.DEAD)
    client = client_for(boss)
    client.post(reverse("task-action", args=[task.pk, "delete"]))
    assert client.get(reverse("task-live", args=[task.pk])).status_code == 404
    assert [e.action for e in audit.trail(task.pk)] == ["delete"]


@override_settings(TIME_ZONE="Asia/Tokyo")
def test_times_follow_the_configured_time_zone() -> None:
    task = make(Status.SUCCEEDED)
    page = client_for(user("boss", staff=True)).get(
        reverse("task-detail", args=[task.pk])
    )
    assert " JST</time>" in page.content.decode()


def test_the_page_links_a_task_with_its_parent_and_its_follow_ups() -> None:
    boss = user("boss", staff=True)
    parent = make(Status.SUCCEEDED, type="report.export")
    child = make(Status.QUEUED, type="mail.send")
    TaskRecord.objects.filter(pk=child.pk).update(parent_id=parent.pk)
    TaskRecord.objects.filter(pk=parent.pk).update(
        followups=[{"channel": "examples", "type": "mail.send", "payload": {}}],
        followed_up=True,
    )
    page = client_for(boss).get(reverse("task-detail", args=[parent.pk]))
    assert reverse("task-detail", args=[child.pk]) in page.content.decode()
    page = client_for(boss).get(reverse("task-detail", args=[child.pk]))
    assert reverse("task-detail", args=[parent.pk]) in page.content.decode()
    waiting = make(Status.RUNNING, type="report.export")
    TaskRecord.objects.filter(pk=waiting.pk).update(
        followups=[{"channel": "examples", "type": "mail.send", "payload": {}}]
    )
    page = client_for(boss).get(reverse("task-detail", args=[waiting.pk]))
    assert "mail.send (once this task succeeds)" in text_of(page.content.decode())
