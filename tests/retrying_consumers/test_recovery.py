"""Taking back attempts whose lease expired ("worker lost")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from django.utils import timezone

from retrying_consumers import RetryMixin, RetryPolicy, store
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from retrying_consumers.policy import Action, Decision
from retrying_consumers.recovery import arecover_lost

pytestmark = pytest.mark.django_db(transaction=True)
gave_up: list[str] = []


class Picky(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=5)

    def decide_retry(self, task: Any, error: BaseException, policy: Any) -> Decision:
        return Decision(Action.GIVE_UP, None, f"picky about {type(error).__name__}")

    def on_give_up(self, task: Any, error: BaseException, decision: Decision) -> None:
        gave_up.append(str(task.id))


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    gave_up.clear()


def lost_task() -> TaskRecord:
    task, _ = store.create_task(
        channel="c", type="job.run", payload={}, ring_timeout=30
    )
    store.claim(task.id, 1, worker="gone:1", lease_seconds=30, default_max_attempts=3)
    TaskRecord.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return task


async def test_an_expired_lease_is_a_lost_worker_retried_by_policy() -> None:
    task = await database_sync_to_async(lost_task)()
    assert await arecover_lost(lambda task: None) == 1
    again = await store.aget_task(task.id)
    assert again.status == Status.RETRYING
    assert again.error_class == "WorkerLost"
    attempt = await database_sync_to_async(AttemptRecord.objects.get)(task=task)
    assert attempt.outcome == "worker_lost"
    assert await arecover_lost(lambda task: None) == 0  # taken once only


async def test_the_consumers_decide_retry_and_hooks_apply() -> None:
    task = await database_sync_to_async(lost_task)()
    assert await arecover_lost(lambda task: Picky()) == 1
    dead = await store.aget_task(task.id)
    assert dead.status == Status.DEAD
    assert dead.reason == "picky about WorkerLost"
    assert gave_up == [str(task.id)]


async def test_a_live_lease_is_left_alone() -> None:
    def running() -> TaskRecord:
        task, _ = store.create_task(
            channel="c", type="job.run", payload={}, ring_timeout=30
        )
        store.claim(task.id, 1, worker="w:1", lease_seconds=30, default_max_attempts=3)
        return task

    task = await database_sync_to_async(running)()
    assert await arecover_lost(lambda task: None) == 0
    assert (await store.aget_task(task.id)).status == Status.RUNNING
