"""Ringing from synchronous code, and what a ring that cannot go out does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings

from retrying_consumers import doorbell, store
from retrying_consumers.models import Status

pytestmark = pytest.mark.django_db(transaction=True)


def queued_task() -> Any:
    task, _ = store.create_task(
        channel="c", type="job.run", payload={}, ring_timeout=30
    )
    return task


def test_sync_rings_share_one_loop_and_reach_the_channel(redis_client: Any) -> None:
    task = queued_task()
    doorbell.ring(task)
    doorbell.ring(task)
    loop = doorbell._ring_loop()
    assert loop is doorbell._ring_loop() and loop.is_running()
    assert doorbell.flush()
    layer = get_channel_layer()
    sent = [layer.deserialize(raw) for raw in redis_client.zrange(b"asgic", 0, -1)]
    rings = [r for m in sent for r in doorbell.rings_in(m)]
    assert rings == [doorbell.ring_message(task)] * 2


def sent_rings(redis_client: Any) -> list[list[Any]]:
    """The rings of each message waiting on channel "c", in order."""
    layer = get_channel_layer()
    messages = [layer.deserialize(m) for m in redis_client.zrange(b"asgic", 0, -1)]
    return [doorbell.rings_in(m) for m in messages]


def test_rings_from_many_threads_each_arrive_once(redis_client: Any) -> None:
    tasks = [queued_task() for _ in range(4)]

    def ring_many(task: Any) -> None:
        for _ in range(50):
            doorbell.ring(task)

    threads = [threading.Thread(target=ring_many, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert doorbell.flush()
    rings = [r for message in sent_rings(redis_client) for r in message]
    assert len(rings) == 200
    for task in tasks:
        assert [r for r in rings if r["task_id"] == str(task.id)] == [
            doorbell.ring_message(task)
        ] * 50


def test_a_burst_of_rings_travels_in_few_messages(
    redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each send takes longer than the gap between rings; in a burst, sends
    # leave RING_LINGER apart, so the rings handed over meanwhile go together,
    # also those that came while the last send was on its way.
    monkeypatch.setattr(doorbell, "RING_LINGER", 0.05)
    layer = get_channel_layer()
    send = layer.send

    async def slow_send(channel: str, message: Any) -> None:
        await asyncio.sleep(0.01)
        await send(channel, message)

    monkeypatch.setattr(layer, "send", slow_send)
    task = queued_task()
    assert doorbell.flush()  # the ring loop's last send is long past
    started = time.monotonic()
    for _ in range(60):
        doorbell.ring(task)
        time.sleep(0.002)
    assert doorbell.flush()
    elapsed = time.monotonic() - started
    messages = sent_rings(redis_client)
    assert sum(len(m) for m in messages) == 60
    # One send at once, then at most one per RING_LINGER.
    assert len(messages) <= 2 + elapsed / 0.05, (len(messages), elapsed)


def test_a_ring_that_hangs_times_out_and_leaves_the_task_queued(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def stuck(channel: str, message: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(get_channel_layer(), "send", stuck)
    monkeypatch.setattr(doorbell, "SYNC_RING_TIMEOUT", 0.05)
    task = queued_task()
    doorbell.ring(task)  # returns at once
    assert doorbell.flush(timeout=5)
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.doorbell"]
    assert record.levelno == logging.WARNING and record.task_id == str(task.id)
    assert "TimeoutError" in record.getMessage()
    stored = store.get_task(task.id)
    assert stored.status == Status.QUEUED and stored.due_at is not None


def test_flush_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    async def slow(channel: str, message: Any) -> None:
        await asyncio.to_thread(release.wait, 5)

    monkeypatch.setattr(get_channel_layer(), "send", slow)
    doorbell.ring(queued_task())
    try:
        assert doorbell.flush(timeout=0.1) is False
    finally:
        release.set()
    assert doorbell.flush(timeout=5)


def test_a_ring_with_no_channel_layer_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = queued_task()
    with override_settings(CHANNEL_LAYERS={}):
        assert async_to_sync(doorbell.aring)(task) is False
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.doorbell"]
    assert "no channel layer is configured" in record.getMessage()


def test_rings_in_opens_batches_and_passes_other_messages_through() -> None:
    ring = {"type": "job.run", "task_id": "x", "attempt": 1}
    batch = doorbell.batch_message([ring, ring])
    assert batch == {"type": doorbell.RINGS_TYPE, "rings": [ring, ring]}
    assert doorbell.rings_in(batch) == [ring, ring]
    assert doorbell.batch_message([ring]) == ring
    assert doorbell.rings_in(ring) == [ring]
    malformed = {"type": doorbell.RINGS_TYPE, "rings": "not a list"}
    assert doorbell.rings_in(malformed) == [malformed]
