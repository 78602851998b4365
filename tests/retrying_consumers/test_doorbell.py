"""Ringing from synchronous code, and what a ring that cannot go out does."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from retrying_consumers import doorbell, store
from retrying_consumers.models import Status

pytestmark = pytest.mark.django_db(transaction=True)


def queued_task() -> Any:
    task, _ = store.create_task(
        channel="c", type="job.run", payload={}, ring_timeout=30
    )
    return task


def test_sync_rings_share_one_loop(redis_client: Any) -> None:
    task = queued_task()
    assert doorbell.ring(task) and doorbell.ring(task)
    loop = doorbell._ring_loop()
    assert loop is doorbell._ring_loop() and loop.is_running()
    assert redis_client.zcard(b"asgic") == 2


def test_a_ring_that_hangs_times_out_and_leaves_the_task_queued(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def stuck(task: Any) -> bool:
        await asyncio.Event().wait()
        return True

    monkeypatch.setattr(doorbell, "aring", stuck)
    monkeypatch.setattr(doorbell, "SYNC_RING_TIMEOUT", 0.05)
    task = queued_task()
    assert doorbell.ring(task) is False
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.doorbell"]
    assert record.levelno == logging.WARNING and record.task_id == str(task.id)
    stored = store.get_task(task.id)
    assert stored.status == Status.QUEUED and stored.due_at is not None
