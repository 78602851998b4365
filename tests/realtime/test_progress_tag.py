"""``{% task_progress %}``: what it renders, for whom, and what the socket adds."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from realtime.consumers import RealtimeConsumer
from realtime.templatetags.task_progress import LABELS
from retrying_consumers import store
from retrying_consumers.models import Status, TaskRecord
from tests import django_tasks_defs as defs

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = (
    Path(__file__).resolve().parents[2] / "realtime/static/realtime/task-progress.js"
)


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def make_user(name: str, staff: bool = False) -> Any:
    """A user; staff here may see every task (the view permission)."""
    made = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    if staff:
        made.user_permissions.add(Permission.objects.get(codename="view_taskrecord"))
    return get_user_model().objects.get(pk=made.pk)


def make_task(owner: Any, **fields: Any) -> TaskRecord:
    task, _ = store.create_task(
        channel="exports",
        type="export.csv",
        payload={},
        ring_timeout=30,
        owner_id=owner.pk if owner else None,
    )
    if fields:
        TaskRecord.objects.filter(pk=task.pk).update(**fields)
        task.refresh_from_db()
    return task


def render(user: Any, task: Any, args: str = "", **context: Any) -> str:
    request = RequestFactory().get("/")
    request.user = user
    template = Template("{% load task_progress %}{% task_progress task " + args + " %}")
    return template.render(Context({"request": request, "task": task, **context}))


def attr(html: str, name: str) -> str | None:
    found = re.search(rf'\s{name}="([^"]*)"', html)
    return found.group(1) if found else None


def test_the_owner_gets_a_progressbar_with_its_values_and_the_attempt() -> None:
    alice = make_user("alice")
    task = make_task(
        alice,
        status=Status.RUNNING,
        attempt=2,
        max_attempts=5,
        progress_current=3,
        progress_total=10,
        progress_message="resizing",
    )
    html = render(alice, task.pk, 'label="Your export"')
    assert attr(html, "data-task-id") == str(task.pk)
    assert attr(html, "data-status") == "running"
    assert 'role="progressbar"' in html
    assert attr(html, "aria-label") == "Your export"
    assert (attr(html, "aria-valuemin"), attr(html, "aria-valuemax")) == ("0", "100")
    assert attr(html, "aria-valuenow") == "30"
    assert attr(html, "aria-valuetext") == "30%, resizing"
    assert 'style="width: 30%"' in html
    assert "attempt 2 of 5" in html
    assert ">Running<" in html


def test_a_task_without_a_total_is_an_indeterminate_bar() -> None:
    alice = make_user("alice")
    task = make_task(alice, status=Status.RUNNING, progress_message="counting")
    html = render(alice, str(task.pk))
    assert attr(html, "aria-valuenow") is None
    assert attr(html, "aria-valuetext") == "counting"


def test_a_retrying_task_shows_its_countdown_and_last_error() -> None:
    alice = make_user("alice")
    due = timezone.now() + timedelta(seconds=42)
    task = make_task(
        alice,
        status=Status.RETRYING,
        attempt=1,
        max_attempts=3,
        due_at=due,
        error_class="ConnectionError",
        error_message="service unavailable",
    )
    html = render(alice, task.pk)
    assert f'datetime="{due.isoformat()}"' in html
    assert re.search(r">in (4[12]) s</time>", html)
    assert "ConnectionError: service unavailable" in html
    assert ">Waiting to retry<" in html


def test_the_final_state_is_rendered_without_javascript() -> None:
    alice = make_user("alice")
    done = make_task(alice, status=Status.SUCCEEDED, attempt=1, max_attempts=3)
    html = render(alice, done.pk)
    assert attr(html, "aria-valuenow") == "100"
    assert ">Done<" in html
    assert re.search(r'data-part="error" hidden', html)


def test_an_error_message_is_escaped() -> None:
    alice = make_user("alice")
    task = make_task(
        alice,
        status=Status.DEAD,
        attempt=3,
        max_attempts=3,
        error_class="ValueError",
        error_message='<script>alert("x")</script>',
        progress_message="<img src=x onerror=alert(1)>",
    )
    html = render(alice, task.pk, "label=label", label="<b>bold</b>")
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "ValueError: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert ">Failed<" in html


def test_another_users_task_renders_the_same_as_no_task_at_all() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    task = make_task(
        alice,
        status=Status.DEAD,
        progress_message="alice's secret file",
        error_class="ValueError",
        error_message="secret",
    )
    theirs = render(bob, task.pk)
    nothing = render(bob, "6f414ab0-79ec-476b-ba93-74eeb45262fc")
    garbage = render(bob, "not-a-task-id")
    assert theirs == nothing == garbage
    assert str(task.pk) not in theirs and "secret" not in theirs
    assert attr(theirs, "data-task-id") is None
    assert attr(theirs, "data-status") == "unavailable"
    assert ">Not available<" in theirs


def test_anonymous_users_see_no_task_not_even_one_without_an_owner() -> None:
    ownerless = make_task(None, status=Status.RUNNING, progress_message="x")
    owned = make_task(make_user("alice"), status=Status.RUNNING)
    for task in (ownerless, owned):
        html = render(AnonymousUser(), task.pk)
        assert attr(html, "data-status") == "unavailable"
        assert str(task.pk) not in html


def test_staff_see_any_task() -> None:
    task = make_task(make_user("alice"), status=Status.QUEUED)
    html = render(make_user("ops", staff=True), task.pk)
    assert attr(html, "data-task-id") == str(task.pk)
    assert ">Waiting to start<" in html


def test_a_django_task_result_owned_by_the_user_can_be_passed_as_is() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    result = defs.echo.owned_by(alice).enqueue(1)
    assert attr(render(alice, result), "data-task-id") == str(result.id)
    assert attr(render(bob, result), "data-status") == "unavailable"


def test_the_socket_url_can_be_given() -> None:
    alice = make_user("alice")
    task = make_task(alice)
    html = render(alice, task.pk, 'ws_url="/custom/ws/"')
    assert attr(html, "data-ws-url") == "/custom/ws/"
    assert attr(render(alice, task.pk), "data-ws-url") is None


def test_the_assets_tag_links_the_stylesheet_and_the_script() -> None:
    html = Template("{% load task_progress %}{% task_progress_assets %}").render(
        Context({})
    )
    assert 'href="/static/realtime/task-progress.css"' in html
    assert '<script src="/static/realtime/task-progress.js" defer></script>' in html


def test_the_script_uses_the_tags_words_for_each_status() -> None:
    source = SCRIPT.read_text()
    block = re.search(r"const LABELS = \{(.*?)\};", source, re.S)
    assert block is not None
    pairs = dict(re.findall(r'(\w+): "([^"]*)"', block.group(1)))
    assert pairs == LABELS


async def subscribe(who: Any, task_ids: list[str]) -> list[dict[str, Any]]:
    comm = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    comm.scope["user"] = who
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    await comm.send_json_to({"action": "subscribe", "tasks": task_ids, "id": 1})
    frames = [await comm.receive_json_from(timeout=3)]
    if len(frames[0]["tasks"]) < len(task_ids):
        frames.append(await comm.receive_json_from(timeout=3))
    await comm.disconnect()
    return frames


async def test_the_socket_refuses_others_and_gives_the_owner_the_result() -> None:
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")
    done = await database_sync_to_async(make_task)(
        alice, status=Status.SUCCEEDED, result={"rows": 12}
    )
    running = await database_sync_to_async(make_task)(alice, status=Status.RUNNING)
    [snapshot] = await subscribe(alice, [str(done.pk), str(running.pk)])
    by_id = {task["id"]: task for task in snapshot["tasks"]}
    assert by_id[str(done.pk)]["result"] == {"rows": 12}
    assert "result" not in by_id[str(running.pk)]
    empty, error = await subscribe(bob, [str(done.pk)])
    assert (empty["type"], empty["tasks"]) == ("snapshot", [])
    assert (error["type"], error["code"]) == ("error", "not_found")
    assert "rows" not in str(error)


def test_the_example_page_lets_a_non_staff_user_start_and_watch_a_task() -> None:
    alice = make_user("alice")
    client = Client()
    assert client.get(reverse("progress-example")).status_code == 302
    client.force_login(alice)
    response = client.post(reverse("progress-example"), {"example": "long"})
    assert response.status_code == 302
    task = TaskRecord.objects.get()
    assert (task.owner_id, task.type) == (alice.pk, "example.long")
    page = client.get(reverse("progress-example")).content.decode()
    assert f'data-task-id="{task.pk}"' in page
    assert "/static/realtime/task-progress.js" in page
    assert "<script>" not in page  # configured from data- attributes only
    client.post(reverse("progress-example"), {"example": "nope"})
    assert TaskRecord.objects.count() == 1
