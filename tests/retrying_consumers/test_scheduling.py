"""The in-process timers that ring retries when their backoff has passed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from retrying_consumers import doorbell, scheduling, store
from retrying_consumers.models import Status, TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "scheduling-test"


def retrying_task(due_in: float) -> TaskRecord:
    task, _ = store.create_task(
        channel=CHANNEL, type="job.run", payload={}, ring_timeout=30
    )
    TaskRecord.objects.filter(pk=task.pk).update(
        status=Status.RETRYING,
        attempt=1,
        due_at=timezone.now() + timedelta(seconds=due_in),
    )
    return TaskRecord.objects.get(pk=task.pk)


async def rings_received(count: int) -> list[dict[str, Any]]:
    layer = get_channel_layer()
    rings: list[dict[str, Any]] = []
    while len(rings) < count:
        message = await asyncio.wait_for(layer.receive(CHANNEL), 2)
        rings += doorbell.rings_in(message)
    return rings


async def test_each_timer_rings_its_retry_once_due(redis_client: Any) -> None:
    # 30 retries due 5 ms apart; no scheduler scan runs here, so a timer that
    # fired a hair early (and found its task not yet due) would leave its
    # task waiting for the next scan, a second later.
    tasks = [
        await database_sync_to_async(retrying_task)(0.05 + n * 0.005) for n in range(30)
    ]
    for task in tasks:
        scheduling.schedule_ring(task)
    rings = await rings_received(len(tasks))
    assert sorted(r["task_id"] for r in rings) == sorted(str(t.id) for t in tasks)
    assert {r["attempt"] for r in rings} == {2}
    for task in tasks:
        fresh = await store.aget_task(task.id)
        assert fresh.status == Status.QUEUED
        # Rung no earlier than due: the backoff is a minimum.
        assert fresh.updated_at >= task.due_at


async def test_a_timer_for_a_task_taken_meanwhile_rings_nothing(
    redis_client: Any,
) -> None:
    task = await database_sync_to_async(retrying_task)(0.02)
    await database_sync_to_async(store.cancel)(task.id)
    scheduling.schedule_ring(task)
    # A live task due after it: its ring can only come after the other's.
    sentinel = await database_sync_to_async(retrying_task)(0.06)
    scheduling.schedule_ring(sentinel)
    rings = await rings_received(1)
    assert [r["task_id"] for r in rings] == [str(sentinel.id)]
    assert redis_client.zcard(get_channel_layer().prefix + CHANNEL) == 0
