"""The dashboard websocket: protocol, authorisation and every bad frame."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission

from realtime import consumers
from realtime.consumers import RealtimeConsumer
from realtime.protocol import MAX_FRAME_BYTES, MAX_TASK_IDS
from retrying_consumers import store
from retrying_consumers.events import apublish
from retrying_consumers.models import Status

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def make_user(name: str, staff: bool = False) -> Any:
    """A user; staff here may see every task (the view permission)."""
    user = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    if staff:
        user.user_permissions.add(Permission.objects.get(codename="view_taskrecord"))
    return user


@database_sync_to_async
def make_task(owner: Any, type: str = "job.run") -> Any:
    task, _ = store.create_task(
        channel="work", type=type, payload={}, ring_timeout=30, owner_id=owner.pk
    )
    return task


async def connect(user: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from()
    assert hello["type"] == "hello" and hello["protocol"] == 1
    return comm


async def receive_type(
    comm: WebsocketCommunicator, kind: str, skip: tuple[str, ...] = ("stats",)
) -> dict[str, Any]:
    """The next frame of ``kind``, skipping periodic stats frames."""
    while True:
        frame = await comm.receive_json_from(timeout=3)
        if frame["type"] == kind:
            return frame
        assert frame["type"] in skip, frame


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


async def test_anonymous_is_refused() -> None:
    comm = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    comm.scope["user"] = AnonymousUser()
    connected, _ = await comm.connect()
    assert not connected


async def test_subscribe_to_own_task_gets_snapshot_then_updates() -> None:
    alice = await make_user("alice")
    task = await make_task(alice)
    comm = await connect(alice)
    await comm.send_json_to({"action": "subscribe", "tasks": [str(task.id)], "id": 7})
    snap = await receive_type(comm, "snapshot")
    assert snap["id"] == 7
    assert [t["id"] for t in snap["tasks"]] == [str(task.id)]
    assert snap["tasks"][0]["status"] == "queued"
    for n in range(50):  # a burst is coalesced into a few batches
        task.progress_current = n
        await apublish(task)
    batches = []
    while not batches or batches[-1]["tasks"][0]["progress"]["current"] != 49:
        batches.append(await receive_type(comm, "update"))
        assert [t["id"] for t in batches[-1]["tasks"]] == [str(task.id)]
    assert len(batches) < 10
    await comm.disconnect()


async def test_someone_elses_task_gets_an_error_and_no_data() -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    secret = await make_task(alice)
    comm = await connect(bob)
    await comm.send_json_to({"action": "subscribe", "tasks": [str(secret.id)]})
    snap = await receive_type(comm, "snapshot")
    assert snap["tasks"] == []
    error = await receive_type(comm, "error")
    assert error["code"] == "not_found"
    assert str(secret.id) in error["detail"]
    await apublish(secret)  # bob must not hear about it
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_mine_scope_sees_only_own_tasks_and_all_is_staff_only() -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    own = await make_task(bob)
    await make_task(alice)
    comm = await connect(bob)
    await comm.send_json_to({"action": "subscribe", "scope": "mine"})
    snap = await receive_type(comm, "snapshot")
    assert [t["id"] for t in snap["tasks"]] == [str(own.id)]
    stats = await receive_type(comm, "stats")
    assert stats["counters"]["queued"] == 1
    assert stats["workers"] == []
    await comm.send_json_to({"action": "subscribe", "scope": "all"})
    assert (await receive_type(comm, "error"))["code"] == "forbidden"
    await comm.disconnect()


async def test_staff_all_scope_hears_every_task() -> None:
    alice, boss = await make_user("alice"), await make_user("boss", staff=True)
    comm = await connect(boss)
    await comm.send_json_to({"action": "subscribe", "scope": "all"})
    await receive_type(comm, "snapshot")
    task = await make_task(alice)
    await apublish(task)
    update = await receive_type(comm, "update")
    assert update["tasks"][0]["id"] == str(task.id)
    await comm.send_json_to({"action": "unsubscribe", "scope": "all"})
    await receive_type(comm, "unsubscribed")
    await apublish(task)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "bad_frame"),
        ('"text"', "bad_frame"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": 5}', "unknown_action"),
        ('{"action": "subscribe"}', "bad_field"),
        ('{"action": "subscribe", "scope": "mine", "tasks": ["x"]}', "bad_field"),
        ('{"action": "subscribe", "scope": "everything"}', "bad_field"),
        ('{"action": "subscribe", "tasks": "abc"}', "bad_field"),
        ('{"action": "subscribe", "tasks": []}', "bad_field"),
        ('{"action": "subscribe", "tasks": [12]}', "bad_field"),
        ('{"action": "subscribe", "tasks": ["not-a-uuid"]}', "bad_field"),
        ('{"action": "ping", "id": {"a": 1}}', "bad_field"),
        ('{"action": "ping", "id": true}', "bad_field"),
        (
            json.dumps(
                {
                    "action": "subscribe",
                    "tasks": [str(uuid.uuid4())] * (MAX_TASK_IDS + 1),
                }
            ),
            "bad_field",
        ),
        (
            json.dumps({"action": "ping", "pad": "x" * MAX_FRAME_BYTES}),
            "frame_too_large",
        ),
        (
            json.dumps({"action": "subscribe", "tasks": [str(uuid.uuid4())]}),
            "not_found",
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    frame: str, code: str
) -> None:
    alice = await make_user("alice")
    comm = await connect(alice)
    await comm.send_to(text_data=frame)
    error = await receive_type(comm, "error", skip=("stats", "snapshot"))
    assert error["code"] == code
    own = await make_task(alice)
    await comm.send_json_to({"action": "subscribe", "tasks": [str(own.id)]})
    assert (await receive_type(comm, "snapshot"))["tasks"][0]["id"] == str(own.id)
    await comm.disconnect()


async def test_binary_frame_gets_an_error() -> None:
    comm = await connect(await make_user("alice"))
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await receive_type(comm, "error"))["code"] == "binary_frame"
    await comm.disconnect()


async def test_ping_reaches_the_ping_channel() -> None:
    comm = await connect(await make_user("alice"))
    await comm.send_json_to({"action": "ping", "id": "p"})
    message = await get_channel_layer().receive("realtime-ping")
    assert message["type"] == "ping.request" and message["id"] == "p"
    await comm.disconnect()


async def next_update(comm: WebsocketCommunicator, within: float) -> Any:
    """The next ``update`` frame if one comes within ``within`` seconds, else
    None (stats frames are skipped; a receive that times out would end the
    consumer, so this polls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (left := deadline - loop.time()) > 0:
        if await comm.receive_nothing(timeout=min(left, 0.05), interval=0.005):
            continue
        frame = await comm.receive_json_from()
        if frame["type"] == "update":
            return frame
        assert frame["type"] == "stats", frame
    return None


async def test_the_end_of_a_task_watched_by_id_is_not_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers, "FLUSH_INTERVAL", 2.0)
    alice = await make_user("alice")
    task, other = await make_task(alice), await make_task(alice)
    comm = await connect(alice)
    await comm.send_json_to(
        {"action": "subscribe", "tasks": [str(task.id), str(other.id)]}
    )
    await receive_type(comm, "snapshot")
    task.status = Status.RUNNING
    await apublish(task)
    assert (await next_update(comm, 1.0))["tasks"][0]["status"] == "running"
    task.progress_current = 1
    await apublish(task)
    assert await next_update(comm, 0.5) is None  # held back by the interval
    task.status = Status.SUCCEEDED
    await apublish(task)
    ended = await next_update(comm, 1.0)  # the interval still has 1.5 s to run
    assert ended is not None
    assert ended["tasks"][0]["status"] == "succeeded"
    assert ended["tasks"][0]["progress"]["current"] == 1
    # One early batch per interval: a second end waits for the next batch.
    other.status = Status.SUCCEEDED
    await apublish(other)
    assert await next_update(comm, 0.5) is None
    late = await next_update(comm, 2.5)
    assert late is not None and late["tasks"][0]["id"] == str(other.id)
    await comm.disconnect()


async def test_the_end_of_a_task_seen_through_a_scope_waits_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dashboard hears every task: ends go with the interval's batches.
    monkeypatch.setattr(consumers, "FLUSH_INTERVAL", 2.0)
    boss = await make_user("boss", staff=True)
    task = await make_task(boss)
    comm = await connect(boss)
    await comm.send_json_to({"action": "subscribe", "scope": "all"})
    await receive_type(comm, "snapshot")
    await apublish(task)
    assert await next_update(comm, 1.0) is not None
    task.status = Status.SUCCEEDED
    await apublish(task)
    assert await next_update(comm, 0.8) is None
    ended = await next_update(comm, 2.5)
    assert ended is not None and ended["tasks"][0]["status"] == "succeeded"
    await comm.disconnect()


async def test_events_that_come_while_a_batch_is_sent_are_sent_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sending = asyncio.Event()
    send = RealtimeConsumer.send

    async def slow_first_update(
        self: Any, text_data: Any = None, bytes_data: Any = None, close: bool = False
    ) -> None:
        # The first batch's send waits, as on a slow network, until the next
        # event has come in behind it.
        is_update = text_data is not None and json.loads(text_data)["type"] == "update"
        if is_update and not sending.is_set():
            sending.set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3
            while not self.pending and loop.time() < deadline:
                await asyncio.sleep(0.005)
            assert self.pending, "the second event never reached the socket"
        await send(self, text_data, bytes_data, close)

    monkeypatch.setattr(RealtimeConsumer, "send", slow_first_update)
    alice = await make_user("alice")
    task = await make_task(alice)
    comm = await connect(alice)
    await comm.send_json_to({"action": "subscribe", "tasks": [str(task.id)]})
    await receive_type(comm, "snapshot")
    await apublish(task)
    await asyncio.wait_for(sending.wait(), 3)
    task.progress_current = 2
    await apublish(task)
    first = await next_update(comm, 3.0)
    assert first is not None and first["tasks"][0]["progress"]["current"] is None
    second = await next_update(comm, 3.0)
    assert second is not None and second["tasks"][0]["progress"]["current"] == 2
    await comm.disconnect()
