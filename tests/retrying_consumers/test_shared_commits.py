"""Concurrent ``aenqueue`` calls of one event loop share one commit; each call
still gets its own task, or its own error. With the real channels-redis layer,
on SQLite and, with ``DATABASE_URL``, on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from retrying_consumers import aenqueue, doorbell
from retrying_consumers.exceptions import InvalidArgument
from retrying_consumers.models import TaskRecord
from retrying_consumers.storage import store

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "many-test"
TYPE = "thumbnail.generate"


def held(client: redis.Redis) -> list[dict[str, Any]]:
    """The rings waiting on ``CHANNEL``, batches opened."""
    assert doorbell.flush()
    layer = get_channel_layer()
    raw = client.zrange(layer.prefix + CHANNEL, 0, -1)
    return [r for m in raw for r in doorbell.rings_in(layer.deserialize(m))]


def rung(client: redis.Redis) -> set[str]:
    return {ring["task_id"] for ring in held(client)}


@pytest.fixture
def shared_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every shared transaction's batch, as it is written."""
    sizes: list[int] = []
    real = store.create_tasks_apart

    def spy(tasks: Any) -> list[TaskRecord]:
        sizes.append(len(tasks))
        return real(tasks)

    monkeypatch.setattr(store, "create_tasks_apart", spy)
    return sizes


async def test_concurrent_calls_share_commits_and_each_gets_its_task(
    redis_client: redis.Redis, shared_batches: list[int]
) -> None:
    ids = await asyncio.gather(
        *(aenqueue(CHANNEL, TYPE, {"n": n}, max_attempts=3) for n in range(40))
    )
    assert len(set(ids)) == 40
    tasks = await sync_to_async(TaskRecord.objects.in_bulk)(ids)
    assert [tasks[i].payload for i in ids] == [{"n": n} for n in range(40)]
    assert {(t.channel, t.type, t.max_attempts) for t in tasks.values()} == {
        (CHANNEL, TYPE, 3)
    }
    # Fewer commits than calls: the calls made together went together.
    assert shared_batches and max(shared_batches) > 1
    assert sum(shared_batches) <= 40
    assert rung(redis_client) == {str(i) for i in ids}


async def test_a_lone_call_is_written_alone_and_rung(
    redis_client: redis.Redis, shared_batches: list[int]
) -> None:
    task_id = await aenqueue(CHANNEL, TYPE, {"n": 1})
    assert shared_batches == []
    assert rung(redis_client) == {str(task_id)}


async def test_a_bad_row_fails_only_its_own_call(
    redis_client: redis.Redis, shared_batches: list[int]
) -> None:
    gone = await sync_to_async(get_user_model().objects.create_user)("gone")
    await sync_to_async(gone.delete)()
    gone.pk = 10**9  # a stale user object: no such row any more
    results = await asyncio.gather(
        aenqueue(CHANNEL, TYPE, {"n": 1}),
        aenqueue(CHANNEL, TYPE, {"n": 2}, user=gone),
        aenqueue(CHANNEL, TYPE, {"n": 3}),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidArgument)
    good = [results[0], results[2]]
    assert all(isinstance(r, uuid.UUID) for r in good)
    stored = await sync_to_async(
        lambda: sorted(TaskRecord.objects.values_list("payload__n", flat=True))
    )()
    assert stored == [1, 3]
    assert rung(redis_client) == {str(r) for r in good}


async def test_keyed_calls_keep_their_own_lookup(redis_client: redis.Redis) -> None:
    results = await asyncio.gather(
        aenqueue(CHANNEL, TYPE, {"n": 1}, idempotency_key="k"),
        aenqueue(CHANNEL, TYPE, {"n": 2}),
        aenqueue(CHANNEL, TYPE, {"n": 1}, idempotency_key="k"),
        aenqueue(CHANNEL, TYPE, {"n": 3}),
    )
    assert results[0] == results[2]  # the same work under one key: one task
    assert len(set(results)) == 3
    assert await sync_to_async(TaskRecord.objects.count)() == 3


async def test_delayed_tasks_are_stored_but_not_rung(
    redis_client: redis.Redis,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = await asyncio.gather(
        aenqueue(CHANNEL, TYPE, {"n": 1}, run_after=later),
        aenqueue(CHANNEL, TYPE, {"n": 2}),
    )
    assert rung(redis_client) == {str(ids[1])}
    assert await sync_to_async(TaskRecord.objects.count)() == 2


async def test_a_caller_cancelled_while_its_commit_runs_still_gets_its_task_rung(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, cancelled = threading.Event(), threading.Event()
    real = store.create_tasks_apart

    def after_the_cancel(tasks: Any) -> list[TaskRecord]:
        writing.set()
        assert cancelled.wait(10)
        return real(tasks)

    monkeypatch.setattr(store, "create_tasks_apart", after_the_cancel)
    first = asyncio.ensure_future(aenqueue(CHANNEL, TYPE, {"n": 1}))
    second = asyncio.ensure_future(aenqueue(CHANNEL, TYPE, {"n": 2}))
    # Both calls are in the batch that is being written.
    assert await asyncio.to_thread(writing.wait, 10)
    first.cancel()
    cancelled.set()
    other = await second
    with pytest.raises(asyncio.CancelledError):
        await first
    stored = await sync_to_async(
        lambda: {t.payload["n"]: str(t.id) for t in TaskRecord.objects.all()}
    )()
    assert stored[2] == str(other)
    assert rung(redis_client) == {stored[1], stored[2]}
