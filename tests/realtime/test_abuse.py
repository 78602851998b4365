"""The websocket under abuse: bad frames, floods, many sockets, ended sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from realtime import access, consumers, queries, statsfeed
from realtime.consumers import PingWorkerConsumer, RealtimeConsumer
from realtime.protocol import FrameBudget, ProtocolError, parse_frame
from retrying_consumers import store
from retrying_consumers.events import apublish

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


@database_sync_to_async
def make_user(name: str, *codenames: str, staff: bool = False) -> Any:
    user = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return get_user_model().objects.get(pk=user.pk)


@database_sync_to_async
def make_task(owner: Any) -> Any:
    task, _ = store.create_task(
        channel="work", type="job.run", payload={}, ring_timeout=30, owner_id=owner.pk
    )
    return task


@database_sync_to_async
def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def connect(user: Any, client: Client | None = None) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    comm.scope["user"] = user
    if client is not None:
        key = client.cookies["sessionid"].value
        comm.scope["session"] = SessionStore(session_key=key)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    return comm


async def next_of(
    comm: WebsocketCommunicator, kind: str, skip: tuple[str, ...] = ("stats",)
) -> dict[str, Any]:
    """The next frame of ``kind``, skipping ``skip`` frames."""
    while True:
        frame = await comm.receive_json_from(timeout=3)
        if frame["type"] == kind:
            return frame
        assert frame["type"] in skip, frame


async def still_usable(comm: WebsocketCommunicator) -> None:
    await comm.send_json_to({"action": "unsubscribe", "scope": "mine", "id": "ok"})
    assert (await next_of(comm, "unsubscribed"))["id"] == "ok"


# Frames that used to close the socket -----------------------------------------


def test_deep_json_is_a_protocol_error() -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"action": "ping", "x": ' + deep + "}", None)
    assert caught.value.code == "too_deep"


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**64 + 5])
def test_ids_beyond_64_bits_are_refused(big: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(json.dumps({"action": "ping", "id": big}), None)
    assert caught.value.code == "bad_field"
    assert parse_frame(json.dumps({"action": "ping", "id": 2**63 - 1}), None).id


async def test_deep_frames_and_huge_ids_get_errors_and_the_socket_stays() -> None:
    comm = await connect(await make_user("alice"))
    await comm.send_to(text_data='{"action": "ping", "x": ' + "[" * 1500 + "]" * 1500)
    assert (await next_of(comm, "error"))["code"] in ("too_deep", "invalid_json")
    await comm.send_to(text_data="[" * 1500 + "]" * 1500)
    assert (await next_of(comm, "error"))["code"] == "too_deep"
    await comm.send_json_to({"action": "ping", "id": 2**64})
    assert (await next_of(comm, "error"))["code"] == "bad_field"
    await still_usable(comm)
    await comm.disconnect()


async def test_a_full_ping_channel_gets_an_error_frame() -> None:
    layer = get_channel_layer()
    with pytest.raises(ChannelFull):
        for _ in range(10_000):  # whoever filled it, it is full now
            await layer.send(PingWorkerConsumer.channel, {"type": "ping.request"})
    comm = await connect(await make_user("alice"))
    await comm.send_json_to({"action": "ping", "id": 7})
    error = await next_of(comm, "error")
    assert (error["code"], error["id"]) == ("unavailable", 7)
    await still_usable(comm)
    await comm.disconnect()


# Floods ---------------------------------------------------------------------


def test_the_frame_budget_refills_with_time() -> None:
    now = [0.0]
    budget = FrameBudget(rate=5, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.2  # one frame's worth
    assert budget.take() and not budget.take()
    now[0] += 100
    assert sum(budget.take() for _ in range(10)) == 3  # never more than the burst


async def test_a_flood_of_frames_is_dropped_with_one_error(monkeypatch: Any) -> None:
    calls = []
    real_snapshot = queries.snapshot

    def counting_snapshot(user: Any, scope: str) -> Any:
        calls.append(scope)
        return real_snapshot(user, scope)

    monkeypatch.setattr(queries, "snapshot", counting_snapshot)
    now = [0.0]  # the budget's clock stands still during the flood

    def still_clock(rate: float, burst: float) -> FrameBudget:
        return FrameBudget(rate, burst, clock=lambda: now[0])

    monkeypatch.setattr(consumers, "FrameBudget", still_clock)
    comm = await connect(await make_user("alice"))
    for n in range(200):
        await comm.send_json_to({"action": "subscribe", "scope": "mine", "id": n})
    answers: list[dict[str, Any]] = []
    while not await comm.receive_nothing(timeout=0.5):
        answers.append(await comm.receive_json_from())
    snapshots = [a for a in answers if a["type"] == "snapshot"]
    errors = [a for a in answers if a["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate_limited"]
    assert len(snapshots) == consumers.FRAME_BURST
    assert len(calls) == len(snapshots)  # dropped frames cost no query
    now[0] += 1.0  # the budget refills with time
    await still_usable(comm)
    await comm.disconnect()


# Many sockets -----------------------------------------------------------------


async def test_sockets_per_user_are_capped(settings: Any) -> None:
    settings.REALTIME_MAX_SOCKETS_PER_USER = 2
    alice, bob = await make_user("alice"), await make_user("bob")
    first, second = await connect(alice), await connect(alice)
    third = WebsocketCommunicator(RealtimeConsumer.as_asgi(), "/ws/tasks/")
    third.scope["user"] = alice
    assert (await third.connect())[0]
    assert (await third.receive_json_from())["code"] == "too_many_sockets"
    assert (await third.receive_output())["code"] == consumers.CLOSE_TOO_MANY_SOCKETS
    other = await connect(bob)  # other users are not affected
    await first.disconnect()
    again = await connect(alice)  # a closed one makes room
    for comm in (second, other, again):
        await still_usable(comm)
        await comm.disconnect()


async def test_stats_are_computed_once_per_view_not_per_socket(
    monkeypatch: Any,
) -> None:
    calls: list[tuple[Any, str]] = []
    real_stats = queries.stats

    def counting_stats(user: Any, scope: str) -> Any:
        calls.append((user.pk, scope))
        return real_stats(user, scope)

    monkeypatch.setattr(queries, "stats", counting_stats)
    monkeypatch.setattr(statsfeed, "STATS_INTERVAL", 600.0)  # no periodic tick
    alice = await make_user("alice")
    boss = await make_user("boss", "view_taskrecord", staff=True)
    chief = await make_user("chief", "view_taskrecord", staff=True)
    await make_task(alice)
    socks = [await connect(alice) for _ in range(6)]
    staff = [await connect(boss), await connect(boss), await connect(chief)]
    for comm in socks:
        await comm.send_json_to({"action": "subscribe", "scope": "mine"})
    for comm in staff:
        await comm.send_json_to({"action": "subscribe", "scope": "all"})
    for comm in socks:
        frame = await next_of(comm, "stats", skip=("snapshot",))
        assert (frame["scope"], frame["counters"]["queued"]) == ("mine", 1)
    for comm in staff:
        assert (await next_of(comm, "stats", skip=("snapshot",)))["scope"] == "all"
    # Nine sockets, two views: each computed once, not once per socket.
    assert calls.count((alice.pk, "mine")) == 1
    assert len([c for c in calls if c[1] == "all"]) == 1
    for comm in socks + staff:
        await comm.disconnect()


# Ended sessions and withdrawn rights ------------------------------------------


async def test_logging_out_closes_that_sessions_sockets_only() -> None:
    alice = await make_user("alice")
    here, elsewhere = await logged_in(alice), await logged_in(alice)
    leaving, staying = await connect(alice, here), await connect(alice, elsewhere)
    await sync_to_async(here.logout)()
    assert (await next_of(leaving, "error"))["code"] == "session_ended"
    assert (await leaving.receive_output(timeout=3))["code"] == 4401
    await still_usable(staying)
    await staying.disconnect()


async def test_the_re_check_closes_sockets_of_ended_sessions() -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    gone, kept = await logged_in(alice), await logged_in(bob)
    closing, staying = await connect(alice, gone), await connect(bob, kept)
    key = gone.cookies["sessionid"].value
    await database_sync_to_async(SessionStore(session_key=key).delete)()
    await access.sockets_here().recheck()
    assert (await next_of(closing, "error"))["code"] == "session_ended"
    assert (await closing.receive_output(timeout=3))["code"] == 4401
    await still_usable(staying)
    await staying.disconnect()


async def test_the_re_check_closes_sockets_of_deactivated_users() -> None:
    alice = await make_user("alice")
    comm = await connect(alice, await logged_in(alice))
    await database_sync_to_async(get_user_model().objects.filter(pk=alice.pk).update)(
        is_active=False
    )
    await access.sockets_here().recheck()
    assert (await next_of(comm, "error"))["code"] == "session_ended"


@pytest.mark.parametrize("withdraw", ["staff flag", "permission"])
async def test_withdrawn_rights_end_the_all_subscription(withdraw: str) -> None:
    alice = await make_user("alice")
    boss = await make_user("boss", "view_taskrecord", staff=True)
    comm = await connect(boss, await logged_in(boss))
    await comm.send_json_to({"action": "subscribe", "scope": "all"})
    await next_of(comm, "snapshot")
    await apublish(await make_task(alice))
    assert (await next_of(comm, "update"))["tasks"]

    @database_sync_to_async
    def take_away() -> None:
        if withdraw == "staff flag":
            get_user_model().objects.filter(pk=boss.pk).update(is_staff=False)
        else:
            boss.user_permissions.clear()

    await take_away()
    await access.sockets_here().recheck()
    assert (await next_of(comm, "error"))["code"] == "forbidden"
    await apublish(await make_task(alice))
    while not await comm.receive_nothing(timeout=0.5):
        assert (await comm.receive_json_from())["type"] == "stats"
    await still_usable(comm)
    await comm.disconnect()


async def test_staff_watching_a_task_by_id_hear_it_while_they_may_see_it() -> None:
    alice = await make_user("alice")
    boss = await make_user("boss", "view_taskrecord", staff=True)
    task = await make_task(alice)
    comm = await connect(boss, await logged_in(boss))
    await comm.send_json_to({"action": "subscribe", "tasks": [str(task.id)]})
    assert [t["id"] for t in (await next_of(comm, "snapshot"))["tasks"]] == [
        str(task.id)
    ]
    await apublish(task)
    assert (await next_of(comm, "update"))["tasks"][0]["id"] == str(task.id)
    await database_sync_to_async(boss.user_permissions.clear)()
    await access.sockets_here().recheck()
    await apublish(task)
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()
