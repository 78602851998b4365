"""A Django ``@task`` enqueued for a user: theirs on the page and the websocket."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from realtime.consumers import RealtimeConsumer
from retrying_consumers import InvalidArgument
from retrying_consumers.models import TaskRecord
from tests import django_tasks_defs as defs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def make_user(name: str, staff: bool = False) -> Any:
    return get_user_model().objects.create_user(name, password="x", is_staff=staff)


def page_status(who: Any, task_id: str) -> int:
    client = Client()
    client.force_login(who)
    response = client.get(reverse("task-detail", args=[task_id]))
    return int(response.status_code)


async def subscribe(who: Any, task_id: str) -> list[dict[str, Any]]:
    """The frames that answer ``who`` subscribing to ``task_id`` by id."""
    comm = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    comm.scope["user"] = who
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    await comm.send_json_to({"action": "subscribe", "tasks": [task_id], "id": 1})
    frames = [await comm.receive_json_from(timeout=3)]
    if not frames[0]["tasks"]:
        frames.append(await comm.receive_json_from(timeout=3))
    await comm.disconnect()
    return frames


def test_the_owner_sees_their_task_on_the_page_and_others_do_not() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    result = defs.echo.owned_by(alice).enqueue(1)
    assert TaskRecord.objects.get(pk=result.id).owner_id == alice.pk
    assert defs.echo.get_result(result.id) == result
    assert result.task.owner_id == alice.pk
    assert page_status(alice, result.id) == 200
    assert page_status(bob, result.id) == 404


async def test_the_owner_watches_their_task_on_the_websocket() -> None:
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")
    result = await defs.echo.owned_by(alice).aenqueue(2)
    [snapshot] = await subscribe(alice, result.id)
    assert [(t["id"], t["owner_id"]) for t in snapshot["tasks"]] == [
        (result.id, alice.pk)
    ]
    empty, error = await subscribe(bob, result.id)
    assert (empty["type"], empty["tasks"]) == ("snapshot", [])
    assert (error["type"], error["code"]) == ("error", "not_found")


def test_the_owner_survives_using_and_is_anybody_by_default() -> None:
    alice = make_user("alice")
    later = timezone.now() + timedelta(hours=1)
    result = defs.echo.owned_by(alice).using(run_after=later).enqueue(3)
    stored = TaskRecord.objects.get(pk=result.id)
    assert (stored.owner_id, stored.due_at) == (alice.pk, later)
    assert TaskRecord.objects.get(pk=defs.echo.enqueue(4).id).owner_id is None
    nobody = defs.echo.owned_by(alice).owned_by(AnonymousUser()).enqueue(5)
    assert TaskRecord.objects.get(pk=nobody.id).owner_id is None


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("alice", "must be an instance of"),
        (get_user_model()(username="unsaved"), "is not saved"),
    ],
)
def test_an_owner_that_is_not_a_saved_user_is_refused(user: Any, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        defs.echo.owned_by(user)
    assert caught.value.argument == "user"


def test_an_owner_deleted_before_enqueue_stores_nothing() -> None:
    alice = make_user("alice")
    owned = defs.echo.owned_by(alice)
    alice.delete()
    with pytest.raises(InvalidArgument, match="has pk"):
        owned.enqueue(6)
    assert not TaskRecord.objects.exists()
