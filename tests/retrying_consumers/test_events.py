"""Task events: batched per group, latest per task, unwatched groups skipped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer

from retrying_consumers import events, store
from retrying_consumers.models import TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    """Every test here uses the real channel layer on the test Redis."""


async def make_task(**fields: Any) -> TaskRecord:
    task, _ = await store.acreate_task(
        channel="c", type="job.run", payload={}, ring_timeout=30, **fields
    )
    return task


async def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def receive(channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(get_channel_layer().receive(channel), 5)


class GroupSends:
    """Records the groups the layer was asked to send to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        layer = get_channel_layer()
        self.groups: list[str] = []
        send = layer.group_send

        async def group_send(group: str, message: dict[str, Any]) -> None:
            self.groups.append(group)
            await send(group, message)

        monkeypatch.setattr(layer, "group_send", group_send)


async def test_events_published_together_travel_as_one_message_per_group() -> None:
    first, second = await make_task(), await make_task()
    everything = await listen(events.ALL_TASKS_GROUP)
    one = await listen(events.task_group(first.id))
    first.progress_current = 1
    await asyncio.gather(
        events.apublish(first),
        events.apublish(second),
        events.apublish(first, {**first.to_event(), "status": "later"}),
    )
    message = await receive(everything)
    assert message["type"] == events.EVENT_TYPE
    # Only the latest event of each task, the latest last.
    assert [(t["id"], t["status"]) for t in message["tasks"]] == [
        (str(second.id), "queued"),
        (str(first.id), "later"),
    ]
    mine = await receive(one)
    assert [t["id"] for t in mine["tasks"]] == [str(first.id)]


async def test_groups_nobody_joined_are_not_sent_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = GroupSends(monkeypatch)
    task = await make_task()
    await events.apublish(task)
    assert sends.groups == []
    watcher = await listen(events.task_group(task.id))
    await events.apublish(task)
    assert sends.groups == [events.task_group(task.id)]
    assert (await receive(watcher))["tasks"][0]["id"] == str(task.id)


async def test_when_group_sizes_cannot_be_read_every_group_is_sent_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = GroupSends(monkeypatch)
    layer = get_channel_layer()

    def no_connection(index: int) -> Any:
        raise ConnectionError("redis went away")

    monkeypatch.setattr(layer, "connection", no_connection)
    task = await make_task()
    await events.apublish(task)
    assert sorted(sends.groups) == sorted(events.groups_for(task))


async def test_a_failed_group_send_is_logged_and_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layer = get_channel_layer()

    async def broken(group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("redis went away")

    monkeypatch.setattr(layer, "group_send", broken)
    task = await make_task()
    await listen(events.ALL_TASKS_GROUP)
    await events.apublish(task)  # does not raise
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.events"]
    assert "group=rc-tasks-all" in record.getMessage()


async def test_publish_returns_at_once_and_flush_waits_for_the_send() -> None:
    task = await make_task()
    watcher = await listen(events.ALL_TASKS_GROUP)
    future = events.publish(task)
    assert not future.done()  # sent from the next turn of the loop
    await events.flush()
    assert future.done()
    assert (await receive(watcher))["tasks"][0]["id"] == str(task.id)


async def test_an_owned_task_also_goes_to_its_owner_s_group(django_user_model) -> None:
    from channels.db import database_sync_to_async

    user = await database_sync_to_async(django_user_model.objects.create_user)("ann")
    task = await make_task(owner_id=user.pk)
    watcher = await listen(events.user_group(user.pk))
    await events.apublish(task)
    assert (await receive(watcher))["tasks"][0]["owner_id"] == user.pk
