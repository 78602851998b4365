"""Stopping a running attempt: the edges of cancelling it in its own loop."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator

from retrying_consumers import RetryMixin, RetryPolicy, is_cancelled, revoking, store
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "revoking-test"
seen: list[str] = []


class Consumer(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=2)

    async def job_wait(self, message: dict[str, Any]) -> None:
        seen.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def job_stubborn(self, message: dict[str, Any]) -> str:
        """Swallows the cancellation and returns a result anyway."""
        seen.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("swallowed")
        return "a result nobody records"

    async def job_quick(self, message: dict[str, Any]) -> str:
        seen.append("started")
        # A cancel that comes while the handler returns must not land on the
        # recording of its outcome.
        revoking.revoke(message["task_id"], "too late")
        return "done"


class LoopingConsumer(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=2)

    def job_loop(self, message: dict[str, Any]) -> str:
        seen.append("started")
        deadline = time.monotonic() + 30
        while not is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(f"saw cancelled={self.task.cancelled}")
        return "ignored"


@pytest.fixture(autouse=True)
def _reset(redis_client: Any) -> None:
    seen.clear()


async def run(
    type: str, consumer: Any = Consumer
) -> tuple[ApplicationCommunicator, TaskRecord]:
    comm = ApplicationCommunicator(
        consumer.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    task, _ = await store.acreate_task(
        channel=CHANNEL, type=type, payload={}, ring_timeout=30
    )
    await comm.send_input({"type": type, "task_id": str(task.id), "attempt": 1})
    await until(lambda: seen, in_loop=True, what="the handler to start")
    return comm, task


def attempt_outcome(task: TaskRecord) -> str:
    return AttemptRecord.objects.get(task=task).outcome


async def test_a_revoked_async_attempt_stops_and_records_nothing_more(
    caplog: Any,
) -> None:
    comm, task = await run("job.wait")
    with caplog.at_level(logging.INFO, logger="retrying_consumers.consumers"):
        await database_sync_to_async(store.cancel)(task.id, reason="by hand")
        assert revoking.revoke(str(task.id), "by hand")
        await until(lambda: "attempt stopped" in caplog.text, in_loop=True)
    assert seen == ["started", "cancelled"]
    assert await database_sync_to_async(attempt_outcome)(task) == "cancelled"
    assert not revoking.revoke(str(task.id)), "no longer running here"
    comm.stop(exceptions=False)


async def test_a_handler_that_swallows_the_cancel_has_its_result_ignored(
    caplog: Any,
) -> None:
    comm, task = await run("job.stubborn")
    with caplog.at_level(logging.INFO, logger="retrying_consumers.consumers"):
        await database_sync_to_async(store.cancel)(task.id, reason="by hand")
        revoking.revoke(str(task.id), "by hand")
        await until(lambda: "attempt stopped" in caplog.text, in_loop=True)
    assert seen == ["started", "swallowed"]
    fresh = await database_sync_to_async(store.get_task)(task.id)
    assert fresh.status == Status.CANCELLED and fresh.result is None
    comm.stop(exceptions=False)


async def test_a_cancel_as_the_handler_returns_does_not_reach_the_recording() -> None:
    # Revoked while it runs, but not cancelled in the store: the attempt ends
    # as stopped, its result ignored, and the worker's task is not cancelled.
    comm, task = await run("job.quick")
    await until(lambda: not revoking._running, in_loop=True, what="the attempt end")
    fresh = await database_sync_to_async(store.get_task)(task.id)
    assert fresh.status == Status.RUNNING and fresh.result is None
    # The consumer instance is alive and runs the next task to the end.
    seen.clear()
    other, _ = await store.acreate_task(
        channel=CHANNEL, type="job.stubborn", payload={}, ring_timeout=30
    )
    await comm.send_input(
        {"type": "job.stubborn", "task_id": str(other.id), "attempt": 1}
    )
    await until(lambda: seen, in_loop=True)
    revoking.revoke(str(other.id))
    await until(lambda: not revoking._running, in_loop=True, what="the attempt end")
    comm.stop(exceptions=False)


async def test_the_listener_revokes_what_the_group_names() -> None:
    comm, task = await run("job.wait")
    layer = get_channel_layer()
    listener = asyncio.create_task(revoking.listen(layer))
    try:
        # The listener joins its group first; announce until it has heard.
        async def announced() -> bool:
            await revoking.aannounce(str(task.id), "from afar")
            await asyncio.sleep(0.05)
            return "cancelled" in seen

        deadline = asyncio.get_running_loop().time() + 10
        while not await announced():
            assert asyncio.get_running_loop().time() < deadline, "never heard"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert seen == ["started", "cancelled"]
    comm.stop(exceptions=False)


async def test_a_sync_handler_sees_is_cancelled_and_its_result_is_ignored(
    caplog: Any,
) -> None:
    comm, task = await run("job.loop", LoopingConsumer)
    assert not is_cancelled(), "outside an attempt"
    with caplog.at_level(logging.INFO, logger="retrying_consumers.consumers"):
        await database_sync_to_async(store.cancel, thread_sensitive=False)(task.id)
        revoking.revoke(str(task.id), "by hand")
        await until(lambda: "attempt stopped" in caplog.text, in_loop=True)
    assert seen == ["started", "saw cancelled=True"]
    fresh = await database_sync_to_async(store.get_task, thread_sensitive=False)(
        task.id
    )
    assert fresh.status == Status.CANCELLED and fresh.result is None
    comm.stop(exceptions=False)
