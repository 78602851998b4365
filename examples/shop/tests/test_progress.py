"""The receipt's progress page: {% task_progress %} and /ws/tasks/ from the wheel."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import pytest
import realtime.routing
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


def make_user(name: str) -> Any:
    return get_user_model().objects.create_user(name, password="x")


def start_receipt(user: Any) -> str:
    client = Client()
    client.force_login(user)
    task_id: str = client.post("/orders/7/receipt/").json()["task_id"]
    return task_id


def page(user: Any, task_id: str) -> str:
    client = Client()
    client.force_login(user)
    return client.get(f"/receipts/{task_id}/").content.decode()


def test_the_owner_sees_the_receipts_final_state_without_javascript() -> None:
    alice = make_user("alice")
    task_id = start_receipt(alice)
    html = page(alice, task_id)
    assert f'data-task-id="{task_id}"' in html
    assert 'role="progressbar"' in html and 'aria-valuenow="100"' in html
    assert ">Done<" in html
    assert '<script src="/static/realtime/task-progress.js" defer>' in html


def test_another_user_sees_nothing_of_it() -> None:
    task_id = start_receipt(make_user("alice"))
    html = page(make_user("bob"), task_id)
    assert task_id not in html and ">Not available<" in html


def test_the_script_ships_in_the_package() -> None:
    script = files("realtime").joinpath("static/realtime/task-progress.js")
    assert "window.TaskProgress" in script.read_text()


@pytest.fixture
def receipt() -> tuple[Any, str]:
    """Alice and her receipt task, which EAGER mode has already run."""
    alice = make_user("alice")
    return alice, start_receipt(alice)


async def test_the_websocket_route_gives_the_owner_the_result(
    receipt: tuple[Any, str],
) -> None:
    alice, task_id = receipt
    app = URLRouter(realtime.routing.websocket_urlpatterns)
    comm = WebsocketCommunicator(app, "/ws/tasks/")
    comm.scope["user"] = alice
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    await comm.send_json_to({"action": "subscribe", "tasks": [task_id], "id": 1})
    snapshot = await comm.receive_json_from(timeout=3)
    await comm.disconnect()
    [task] = snapshot["tasks"]
    assert (task["status"], task["result"]) == ("succeeded", "receipt-7")
