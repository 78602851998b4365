"""RetryingWorker's own failure paths, in process (the rest runs real workers:
tests/e2e/test_worker_faults.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.utils import timezone

from retrying_consumers import doorbell, store
from retrying_consumers import worker as worker_module
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.worker import RetryingWorker, WorkerConfig
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)


async def test_rings_that_cannot_be_handed_back_are_logged_once_and_kept_in_store(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redis_client: Any
) -> None:
    layer = get_channel_layer()

    async def full(channel: str, message: dict[str, Any]) -> None:
        raise ChannelFull()

    monkeypatch.setattr(layer, "send", full)
    tasks = []
    for _ in range(2):
        task, _ = await store.acreate_task(
            channel="c", type="job.run", payload={}, ring_timeout=30
        )
        tasks.append(task)
    worker = RetryingWorker(None, ["c"], layer)
    await worker._give_back("c", [doorbell.ring_message(t) for t in tasks])
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.worker"]
    assert record.levelno == logging.WARNING
    assert "could not hand back 2 ring(s)" in record.getMessage()
    assert "ChannelFull" in record.getMessage()
    for task in tasks:  # the scheduler rings them again when due_at passes
        fresh = await store.aget_task(task.id)
        assert fresh.status == Status.QUEUED and fresh.due_at is not None


# Retries fallen due in this process ------------------------------------------

CHANNEL = "due-retries"


class Recorder:
    """A worker channel's application: records each message it runs.

    Each message runs ``seconds``; one whose task id is ``blocker`` runs until
    ``unblock`` is set.
    """

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.seen: list[str] = []
        self.unblock = asyncio.Event()
        self.changed = asyncio.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            async with self.changed:
                self.seen.append(str(message["task_id"]))
                self.changed.notify_all()
            if message["task_id"] == "blocker":
                await self.unblock.wait()
            await asyncio.sleep(self.seconds)

    async def wait_seen(self, count: int) -> list[str]:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.seen) >= count), 5
            )
        return self.seen


def ring(task_id: Any, attempt: int = 1) -> dict[str, Any]:
    return {"type": "job.run", "task_id": str(task_id), "attempt": attempt}


@asynccontextmanager
async def running_worker(
    app: Recorder, monkeypatch: pytest.MonkeyPatch, **config: Any
) -> AsyncIterator[RetryingWorker]:
    """A worker serving CHANNEL with ``app``; its scheduler scans nothing."""

    async def no_scan(self: RetryingWorker) -> None:
        return None

    monkeypatch.setattr(RetryingWorker, "_schedule", no_scan)
    worker = RetryingWorker(app, [CHANNEL], get_channel_layer(), WorkerConfig(**config))
    main = asyncio.create_task(worker.main())
    await until(lambda: hasattr(worker, "stopping"), 5, "the worker", in_loop=True)
    try:
        yield worker
    finally:
        app.unblock.set()
        worker._on_signal(signal.SIGTERM)
        await asyncio.wait_for(main, 10)


def due_retry() -> Any:
    task, _ = store.create_task(
        channel=CHANNEL, type="job.run", payload={}, ring_timeout=30
    )
    TaskRecord.objects.filter(pk=task.pk).update(
        status=Status.RETRYING, attempt=1, due_at=timezone.now()
    )
    return task.id


async def occupy_a_slot(app: Recorder) -> None:
    """Send a blocker to the channel and wait until a slot runs it."""
    await get_channel_layer().send(CHANNEL, ring("blocker"))
    await app.wait_seen(1)


def queued_in_redis(redis_client: Any) -> int:
    return int(redis_client.zcard(get_channel_layer().prefix + CHANNEL))


async def test_a_due_retry_runs_at_once_when_a_slot_is_free(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    app = Recorder()
    async with running_worker(app, monkeypatch, concurrency=2) as worker:
        assert await worker.run_due(uuid.uuid4(), CHANNEL, ring("retry", 2))
        assert await app.wait_seen(1) == ["retry"]
    assert queued_in_redis(redis_client) == 0


async def test_a_due_retry_takes_the_next_free_slot_ahead_of_the_channel(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    app = Recorder()
    layer = get_channel_layer()
    async with running_worker(app, monkeypatch, concurrency=1) as worker:
        await occupy_a_slot(app)
        await layer.send(CHANNEL, ring("first"))  # waits in Redis: no free slot
        assert await worker.run_due(uuid.uuid4(), CHANNEL, ring("retry", 2))
        assert list(worker.due[CHANNEL])  # held, not rung
        app.unblock.set()
        assert await app.wait_seen(3) == ["blocker", "retry", "first"]


async def test_a_held_retry_waits_while_slots_keep_freeing_up(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    monkeypatch.setattr(worker_module, "DUE_HOLD", 0.05)
    app = Recorder(seconds=0.03)  # the last of four starts 90 ms after the first
    async with running_worker(app, monkeypatch, concurrency=1) as worker:
        await occupy_a_slot(app)
        for n in range(4):
            assert await worker.run_due(uuid.uuid4(), CHANNEL, ring(f"r{n}", 2))
        app.unblock.set()
        assert await app.wait_seen(5) == ["blocker", "r0", "r1", "r2", "r3"]
    assert queued_in_redis(redis_client) == 0


async def test_a_due_retry_is_rung_when_the_listener_waits_with_the_last_slot(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    # Held, it would wait for a slot the listener keeps until a message comes.
    app = Recorder()
    async with running_worker(app, monkeypatch, concurrency=1) as worker:
        await until(lambda: CHANNEL in worker.receiving, 5, "listener", in_loop=True)
        assert not await worker.run_due(uuid.uuid4(), CHANNEL, ring("r", 2))
        assert not worker.due[CHANNEL]
    assert app.seen == []


async def test_a_due_retry_is_held_while_an_attempt_of_its_channel_runs(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    # One slot runs the blocker, the listener waits with the other: the
    # blocker's slot frees up first, so the retry waits for it.
    app = Recorder()
    async with running_worker(app, monkeypatch, concurrency=2) as worker:
        await occupy_a_slot(app)
        await until(lambda: CHANNEL in worker.receiving, 5, "listener", in_loop=True)
        assert await worker.run_due(uuid.uuid4(), CHANNEL, ring("retry", 2))
        assert list(worker.due[CHANNEL])
        app.unblock.set()
        assert await app.wait_seen(2) == ["blocker", "retry"]
    assert queued_in_redis(redis_client) == 0


async def test_a_held_retry_is_rung_to_the_channel_when_no_slot_frees_up(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    monkeypatch.setattr(worker_module, "DUE_HOLD", 0.05)
    app = Recorder()
    task_id = await database_sync_to_async(due_retry)()
    async with running_worker(app, monkeypatch, concurrency=1) as worker:
        await occupy_a_slot(app)
        assert await worker.run_due(task_id, CHANNEL, ring(task_id, 2))
        await until(  # rung for any worker
            lambda: queued_in_redis(redis_client), 5, "the ring", in_loop=True
        )
        assert not worker.due[CHANNEL]
        task = await store.aget_task(task_id)
        assert task.status == Status.QUEUED  # its ring was taken
        app.unblock.set()
        assert await app.wait_seen(2) == ["blocker", str(task_id)]


async def test_retries_held_at_shutdown_are_rung_to_the_channel(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    app = Recorder()
    layer = get_channel_layer()
    task_id = await database_sync_to_async(due_retry)()
    async with running_worker(
        app, monkeypatch, concurrency=1, grace_period=0.1
    ) as worker:
        await occupy_a_slot(app)
        assert await worker.run_due(task_id, CHANNEL, ring(task_id, 2))
        worker._on_signal(signal.SIGTERM)
        assert not await worker.run_due(uuid.uuid4(), CHANNEL, ring("late", 2))
    assert app.seen == ["blocker"]
    message = await asyncio.wait_for(layer.receive(CHANNEL), 2)
    assert doorbell.rings_in(message) == [ring(task_id, 2)]


async def test_a_retry_of_a_channel_not_served_here_is_not_taken(
    monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    app = Recorder()
    async with running_worker(app, monkeypatch) as worker:
        assert not await worker.run_due(uuid.uuid4(), "elsewhere", ring("x", 2))
    assert app.seen == []


class InstanceRecorder(Recorder):
    """Records which consumer instance ran each message; "crash" kills one."""

    def __init__(self) -> None:
        super().__init__()
        self.instances: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["task_id"] == "crash":
                raise RuntimeError("the instance crashed")
            async with self.changed:
                self.instances.append(id(receive))
                self.seen.append(str(message["task_id"]))
                self.changed.notify_all()


async def test_instances_are_reused_and_a_crashed_one_is_replaced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = InstanceRecorder()
    layer = get_channel_layer()
    async with running_worker(app, monkeypatch, concurrency=4):
        for n in range(40):
            await layer.send(CHANNEL, ring(n))
            await app.wait_seen(n + 1)
        with caplog.at_level(logging.ERROR, logger="retrying_consumers.worker"):
            await layer.send(CHANNEL, ring("crash"))
            for n in range(40, 43):
                await layer.send(CHANNEL, ring(n))
                await app.wait_seen(n + 1)  # "crash" is not recorded
    # One message at a time: a freed instance takes the next one, so there are
    # never more instances than slots, however many messages run.
    assert len(set(app.instances[:40])) <= 4
    assert app.seen[40:] == ["40", "41", "42"]
    assert "consumer instance for channel" in caplog.text
