"""Ringing from synchronous code, and what a ring that cannot go out does."""

from __future__ import annotations

import asyncio
import logging
import threading
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
