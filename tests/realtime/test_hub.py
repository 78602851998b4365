"""The hub: one group member per process, events handed out in memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer

from realtime.hub import hub_for
from retrying_consumers import events, store
from tests.realtime.test_consumer import connect, make_task, make_user, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


class Ear:
    """A listener that keeps what it hears."""

    def __init__(self) -> None:
        self.heard: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def task_updates(self, event: dict[str, Any]) -> None:
        self.heard.append(event)
        self.arrived.set()


def members(redis_client: Any, group: str) -> int:
    layer = get_channel_layer()
    return int(redis_client.zcard(layer._group_key(group)))


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


async def test_many_sockets_on_one_task_make_one_group_member(redis_client) -> None:
    alice = await make_user("alice")
    task = await make_task(alice)
    sockets = [await connect(alice) for _ in range(5)]
    for comm in sockets:
        await comm.send_json_to({"action": "subscribe", "tasks": [str(task.id)]})
        await receive_type(comm, "snapshot")
    assert members(redis_client, events.task_group(task.id)) == 1
    task.progress_current = 3
    await events.apublish(task)
    for comm in sockets:
        update = await receive_type(comm, "update")
        assert update["tasks"][0]["progress"]["current"] == 3
    for comm in sockets[:-1]:
        await comm.disconnect()
    assert members(redis_client, events.task_group(task.id)) == 1
    await sockets[-1].disconnect()
    assert members(redis_client, events.task_group(task.id)) == 0


async def two_ears_one_event(event: dict[str, Any]) -> tuple[Ear, Ear]:
    """Ears on two groups, and ``event`` sent to the first group."""
    hub = hub_for(get_channel_layer())
    one, other = Ear(), Ear()
    await hub.join("rc-test-one", one)
    await hub.join("rc-test-other", other)
    await get_channel_layer().group_send("rc-test-one", event)
    return one, other


async def test_events_go_only_to_the_listeners_of_their_group() -> None:
    one, other = await two_ears_one_event(
        {"type": "task.updates", "group": "rc-test-one", "tasks": []}
    )
    # The hub hands messages out in order: once a later one for the other
    # group has arrived, the first has been handed out too.
    later = {"type": "task.updates", "group": "rc-test-other", "tasks": []}
    await get_channel_layer().group_send("rc-test-other", later)
    await asyncio.wait_for(other.arrived.wait(), 3)
    assert len(one.heard) == 1 and other.heard == [later]


async def test_a_message_naming_no_group_goes_to_every_listener() -> None:
    one, other = await two_ears_one_event({"type": "task.updates", "tasks": []})
    await asyncio.wait_for(other.arrived.wait(), 3)
    assert len(one.heard) == 1 and len(other.heard) == 1


async def test_a_listener_that_fails_does_not_stop_the_others(caplog) -> None:
    class Broken:
        async def task_updates(self, event: dict[str, Any]) -> None:
            raise RuntimeError("socket gone")

    hub = hub_for(get_channel_layer())
    ear = Ear()
    await hub.join("rc-test-one", Broken())
    await hub.join("rc-test-one", ear)
    await get_channel_layer().group_send(
        "rc-test-one", {"type": "task.updates", "group": "rc-test-one", "tasks": []}
    )
    await asyncio.wait_for(ear.arrived.wait(), 3)
    assert any("could not take a task event" in r.getMessage() for r in caplog.records)


async def test_leaving_twice_or_unknown_groups_changes_nothing(redis_client) -> None:
    hub = hub_for(get_channel_layer())
    ear = Ear()
    await hub.leave("rc-test-never", ear)  # never joined
    await hub.join("rc-test-one", ear)
    await hub.leave("rc-test-one", ear)
    await hub.leave("rc-test-one", ear)
    assert members(redis_client, "rc-test-one") == 0


async def test_events_name_their_group(redis_client) -> None:
    task, _ = await store.acreate_task(
        channel="work", type="job.run", payload={}, ring_timeout=30
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.task_group(task.id), channel)
    await events.apublish(task)
    message = await asyncio.wait_for(layer.receive(channel), 3)
    assert message["group"] == events.task_group(task.id)


async def hear_through_an_outage(monkeypatch: Any, failures: int) -> None:
    """The hub's receive fails ``failures`` times; then a message must reach it."""
    layer = get_channel_layer()
    receive = layer.receive
    errors = [ConnectionError("redis went away") for _ in range(failures)]

    async def flaky(channel: str) -> dict[str, Any]:
        if errors:
            raise errors.pop()
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", flaky)
    ear = Ear()
    await hub_for(layer).join("rc-test-one", ear)
    await layer.group_send(
        "rc-test-one", {"type": "task.updates", "group": "rc-test-one", "tasks": []}
    )
    await asyncio.wait_for(ear.arrived.wait(), 3)


async def test_the_hub_outlives_a_lost_channel_layer(monkeypatch, caplog) -> None:
    await hear_through_an_outage(monkeypatch, 1)
    lost = [r for r in caplog.records if "hub lost the channel layer" in r.getMessage()]
    assert len(lost) == 1


async def test_a_long_outage_is_logged_once_and_its_end_too(
    monkeypatch, caplog
) -> None:
    monkeypatch.setattr("realtime.hub.MAX_BACKOFF", 0.05)
    with caplog.at_level("DEBUG", logger="realtime.hub"):
        await hear_through_an_outage(monkeypatch, 4)
    hub_records = [r for r in caplog.records if r.name == "realtime.hub"]
    lost = [r for r in hub_records if "lost the channel layer" in r.getMessage()]
    assert [r.levelname for r in lost] == ["WARNING", "DEBUG", "DEBUG", "DEBUG"]
    [back] = [r for r in hub_records if "again after" in r.getMessage()]
    assert back.levelname == "WARNING"
