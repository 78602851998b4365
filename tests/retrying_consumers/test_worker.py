"""RetryingWorker's own failure paths, in process (the rest runs real workers:
tests/e2e/test_worker_faults.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from retrying_consumers import doorbell, store
from retrying_consumers.models import Status
from retrying_consumers.worker import RetryingWorker

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
