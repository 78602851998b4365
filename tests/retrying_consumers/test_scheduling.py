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
from tests.waiting import until

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


class Runner:
    """A worker's side of serve_due_retries: answers ``answer`` or raises it."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.offered: list[tuple[Any, str, dict[str, Any]]] = []

    async def run_due(self, task_id: Any, channel: str, ring: dict[str, Any]) -> bool:
        self.offered.append((task_id, channel, ring))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def timers_done() -> None:
    """Wait for this loop's unfinished timer jobs.

    Finished jobs leave ``_pending`` only on a later turn of the loop, and an
    earlier test's loop may have left some of its own.
    """
    loop = asyncio.get_running_loop()
    while jobs := [
        j for j in scheduling._pending if j.get_loop() is loop and not j.done()
    ]:
        await asyncio.gather(*jobs)


async def test_a_due_retry_goes_to_the_worker_serving_this_loop(
    redis_client: Any,
) -> None:
    runner = Runner(True)
    scheduling.serve_due_retries(runner)
    task = await database_sync_to_async(retrying_task)(0.02)
    scheduling.schedule_ring(task)
    await until(lambda: runner.offered, 5, "the offer", in_loop=True)
    await timers_done()
    assert runner.offered == [(task.id, CHANNEL, doorbell.ring_message(task))]
    # Not rung, and its ring not taken: the claim takes a due retry itself.
    assert redis_client.zcard(get_channel_layer().prefix + CHANNEL) == 0
    assert (await store.aget_task(task.id)).status == Status.RETRYING


@pytest.mark.parametrize("answer", [False, RuntimeError("boom")])
async def test_a_due_retry_the_worker_does_not_take_is_rung(
    answer: bool | Exception, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runner = Runner(answer)
    scheduling.serve_due_retries(runner)
    task = await database_sync_to_async(retrying_task)(0.02)
    scheduling.schedule_ring(task)
    rings = await rings_received(1)
    assert [r["task_id"] for r in rings] == [str(task.id)]
    assert len(runner.offered) == 1
    failed = [r for r in caplog.records if "could not run due" in r.getMessage()]
    assert len(failed) == (1 if isinstance(answer, Exception) else 0)


async def test_with_no_worker_serving_the_loop_a_due_retry_is_rung(
    redis_client: Any,
) -> None:
    runner = Runner(True)
    scheduling.serve_due_retries(runner)
    scheduling.serve_due_retries(None)
    task = await database_sync_to_async(retrying_task)(0.02)
    scheduling.schedule_ring(task)
    rings = await rings_received(1)
    assert [r["task_id"] for r in rings] == [str(task.id)]
    assert runner.offered == []
