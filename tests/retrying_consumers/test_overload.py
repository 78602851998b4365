"""A channel full to capacity: refused rings are rung again as it has room.

Real Redis through channels-redis, with a channel that holds a few messages;
the pauses of a full channel run on an injected clock.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from retrying_consumers import aenqueue, doorbell, store
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.scheduling import aring_due

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "overload-test"
OTHER = "overload-other"
TYPE = "job.run"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capacity(redis_client: redis.Redis) -> Iterator[Callable[[int], FakeClock]]:
    """Give channels a capacity of n messages, and their pauses a fake clock."""
    overrides: list[Any] = []

    def set_capacity(n: int) -> FakeClock:
        layers = copy.deepcopy(settings.CHANNEL_LAYERS)
        layers["default"]["CONFIG"]["capacity"] = n
        overrides.append(override_settings(CHANNEL_LAYERS=layers))
        overrides[-1].enable()
        channel_layers.backends.clear()
        assert get_channel_layer().capacity == n
        clock = FakeClock()
        doorbell.full_channels(get_channel_layer()).clock = clock
        return clock

    yield set_capacity
    for override in reversed(overrides):
        override.disable()
    channel_layers.backends.clear()


async def fill(channel: str, messages: int) -> None:
    for n in range(messages):
        await get_channel_layer().send(channel, {"type": "filler", "n": n})


async def take_all(channel: str) -> list[dict[str, Any]]:
    """Every message waiting on ``channel``, as a worker would take them."""
    layer = get_channel_layer()
    key = layer.prefix + channel
    messages = []
    while await layer.connection(0).zcount(key, "-inf", "+inf"):
        messages.append(await layer.receive(channel))
    return messages


def rings_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for m in messages for r in doorbell.rings_in(m) if r["type"] != "filler"]


def held(redis_client: redis.Redis, channel: str = CHANNEL) -> int:
    return int(redis_client.zcard(get_channel_layer().prefix + channel))


def due_now(ids: list[Any]) -> int:
    return TaskRecord.objects.filter(
        pk__in=ids, status=Status.QUEUED, due_at__lte=timezone.now()
    ).count()


def due_tasks(count: int, channel: str = CHANNEL) -> list[Any]:
    """``count`` queued tasks, all due: as if each ring had been refused."""
    past = timezone.now() - timedelta(seconds=1)
    with transaction.atomic():
        return [
            store.create_task(
                channel=channel, type=TYPE, payload={}, ring_timeout=30, run_after=past
            )[0].id
            for _ in range(count)
        ]


def zcounts(redis_client: redis.Redis) -> int:
    """ZCOUNTs since the last reset: one per send, one per look at a channel."""
    stats = redis_client.info("commandstats")
    return int(stats.get("cmdstat_zcount", {}).get("calls", 0))


def refusals(caplog: pytest.LogCaptureFixture) -> int:
    """Rings refused, by the doorbell's log records (their first argument)."""
    return sum(
        int(r.args[0])  # type: ignore[index]
        for r in caplog.records
        if r.name == "retrying_consumers.doorbell" and "ring(s) failed" in r.msg
    )


async def test_a_refused_ring_makes_its_task_due_at_once(
    capacity: Callable[[int], FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    capacity(1)
    await fill(CHANNEL, 1)
    task_id = await aenqueue(CHANNEL, TYPE)
    task = await store.aget_task(task_id)
    # Due now, not one RING_TIMEOUT (30 s) from now: the next look rings it.
    assert task.status == Status.QUEUED
    assert task.due_at is not None and task.due_at <= timezone.now()
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.doorbell"]
    assert record.levelno == logging.WARNING and record.task_id == str(task_id)


async def test_a_refused_ring_is_rung_again_by_the_first_look_with_room(
    capacity: Callable[[int], FakeClock], redis_client: redis.Redis
) -> None:
    clock = capacity(1)
    await fill(CHANNEL, 1)
    task_id = await aenqueue(CHANNEL, TYPE)
    # Still full: nothing is taken, so nothing is refused again.
    assert await aring_due() == 0
    assert await database_sync_to_async(due_now)([task_id]) == 1
    assert rings_of(await take_all(CHANNEL)) == []  # a worker takes the filler
    clock.now += doorbell.FULL_PAUSE_MAX
    assert await aring_due() == 1
    task = await store.aget_task(task_id)
    assert rings_of(await take_all(CHANNEL)) == [doorbell.ring_message(task)]


async def test_one_look_rings_as_many_as_the_channel_has_room_for(
    capacity: Callable[[int], FakeClock],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capacity(20)  # HEADROOM keeps 2 messages free
    await fill(CHANNEL, 5)
    ids = await database_sync_to_async(due_tasks)(1000)
    # 13 messages of 50 rings: far more than the 100 a look used to ring.
    assert await aring_due() == 650
    assert held(redis_client) == 18
    assert await database_sync_to_async(due_now)(ids) == 350
    assert refusals(caplog) == 0  # none was taken only to be refused
    messages = await take_all(CHANNEL)
    assert len(rings_of(messages)) == 650
    assert await aring_due() == 350
    assert len(rings_of(await take_all(CHANNEL))) == 350
    assert await database_sync_to_async(due_now)(ids) == 0


async def test_a_full_channel_is_left_alone_while_it_stays_full(
    capacity: Callable[[int], FakeClock],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = capacity(1)
    await fill(CHANNEL, 1)
    redis_client.config_resetstat()
    ids = [await aenqueue(CHANNEL, TYPE) for _ in range(20)]
    for _ in range(5):
        assert await aring_due() == 0
    # Only the first ring asked Redis; the others, and the looks, did not.
    assert zcounts(redis_client) == 1
    assert await database_sync_to_async(due_now)(ids) == 20
    assert refusals(caplog) == 20
    pauses = []
    for _ in range(7):
        clock.now += doorbell.full_channels(get_channel_layer()).pauses[CHANNEL][1]
        assert await aring_due() == 0
        pauses.append(doorbell.full_channels(get_channel_layer()).pauses[CHANNEL][1])
    # One look after each pause, each pause twice the last, up to the cap.
    assert zcounts(redis_client) == 1 + 7
    assert pauses == [0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5]
    assert await database_sync_to_async(due_now)(ids) == 20


async def test_a_channel_with_room_is_rung_while_another_is_full(
    capacity: Callable[[int], FakeClock], redis_client: redis.Redis
) -> None:
    capacity(1)
    await fill(CHANNEL, 1)
    full = await database_sync_to_async(due_tasks)(150)
    roomy = await database_sync_to_async(due_tasks)(3, OTHER)
    assert await aring_due() == 3
    assert {r["task_id"] for r in rings_of(await take_all(OTHER))} == {
        str(i) for i in roomy
    }
    assert await database_sync_to_async(due_now)(full) == 150


async def test_rings_a_worker_sends_back_to_a_full_channel_are_made_due(
    capacity: Callable[[int], FakeClock], redis_client: redis.Redis
) -> None:
    capacity(1)
    [task_id] = await database_sync_to_async(due_tasks)(1)
    [task] = await database_sync_to_async(store.take_rings)([task_id], ring_timeout=30)
    assert task is not None and task.due_at is not None
    assert task.due_at > timezone.now()  # taken: rung again in 30 s if lost
    await fill(CHANNEL, 1)
    with pytest.raises(ChannelFull):  # for the worker to log
        await doorbell.aring_again(CHANNEL, [doorbell.ring_message(task)])
    assert await database_sync_to_async(due_now)([task_id]) == 1


async def test_rings_leave_the_last_places_to_rings_sent_back(
    capacity: Callable[[int], FakeClock], redis_client: redis.Redis
) -> None:
    # A worker that took more rings than it can run sends the rest back; were
    # the channel full, they would wait RING_TIMEOUT (30 s) to be rung again.
    capacity(20)  # HEADROOM: 2 places
    await fill(CHANNEL, 18)
    [refused, taken] = [await aenqueue(CHANNEL, TYPE) for _ in range(2)]
    assert held(redis_client) == 18
    assert await database_sync_to_async(due_now)([refused, taken]) == 2
    assert await aring_due() == 0
    task = await store.aget_task(taken)
    # The pause that the refusal began does not hold back a ring sent back.
    await doorbell.aring_again(CHANNEL, [doorbell.ring_message(task)])
    assert held(redis_client) == 19


async def test_a_ring_lost_otherwise_waits_for_ring_timeout(
    capacity: Callable[[int], FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis down: ringing again at once would only fail again, each look.
    capacity(100)

    async def unreachable(channel: str, message: Any) -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(get_channel_layer(), "send", unreachable)
    task_id = await aenqueue(CHANNEL, TYPE)
    assert await database_sync_to_async(due_now)([task_id]) == 0
    task = await store.aget_task(task_id)
    assert task.due_at is not None and task.due_at > timezone.now()


def plan_of(sql: str) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` details or PostgreSQL's ``EXPLAIN``."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return "\n".join(row[-1] for row in cursor.fetchall())
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_look_reads_the_index_of_waiting_tasks() -> None:
    # Every worker looks each second: a scan of the table would cost more as
    # finished tasks pile up.
    now = timezone.now()
    TaskRecord.objects.bulk_create(
        TaskRecord(
            channel=CHANNEL,
            type=TYPE,
            status=Status.SUCCEEDED,
            attempt=1,
            finished_at=now,
        )
        for _ in range(500)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskRecord._meta.db_table}")
    with CaptureQueriesContext(connection) as looks:
        assert store.due_channels() == []
        assert store.due_task_ids(100, CHANNEL) == []
    assert len(looks) == 2
    for look in looks:
        plan = plan_of(look["sql"])
        if connection.vendor == "sqlite":
            assert "USING INDEX rc_task_" in plan, (look["sql"], plan)
            assert not any(line.startswith("SCAN") for line in plan.splitlines())
        else:
            assert "rc_task_" in plan, (look["sql"], plan)
            assert "Seq Scan" not in plan, (look["sql"], plan)
