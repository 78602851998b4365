"""Tests for retrying_consumers.producer, with the real channels-redis layer.

Rings are inspected in the test Redis itself (a channel is a sorted set there),
and received with the layer's own ``receive``. A ring is handed to the ring loop
when the transaction commits; the helpers wait for it to be sent
(``doorbell.flush``), so "nothing rung yet" is checked by what Redis holds, or
by a marker message sent meanwhile that must arrive first.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from retrying_consumers import doorbell, producer, store
from retrying_consumers.exceptions import InvalidPayload, TaskNotFound
from retrying_consumers.models import Outcome, Status, TaskRecord
from retrying_consumers.policy import Action, Decision
from retrying_consumers.producer import aenqueue, enqueue

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "examples-test"
TYPE = "thumbnail.generate"
MARKER = {"type": "test.marker"}


class Rollback(Exception):
    """Raised to roll an atomic block back."""


def messages(client: redis.Redis, channel: str = CHANNEL) -> list[dict[str, Any]]:
    """The messages waiting on ``channel`` in Redis, oldest first, left in place.

    Rings handed over by ``enqueue`` so far are sent first.
    """
    assert doorbell.flush()
    layer = get_channel_layer()
    return [
        layer.deserialize(raw) for raw in client.zrange(layer.prefix + channel, 0, -1)
    ]


def held(client: redis.Redis, channel: str = CHANNEL) -> list[dict[str, Any]]:
    """The rings waiting on ``channel``, oldest first, batches opened."""
    return [r for m in messages(client, channel) for r in doorbell.rings_in(m)]


async def areceive(channel: str = CHANNEL) -> dict[str, Any]:
    await asyncio.to_thread(doorbell.flush)
    return await asyncio.wait_for(get_channel_layer().receive(channel), 5)


def receive(channel: str = CHANNEL) -> dict[str, Any]:
    return async_to_sync(areceive)(channel)


def send(message: dict[str, Any], channel: str = CHANNEL) -> None:
    async_to_sync(get_channel_layer().send)(channel, message)


def ring_of(task_id: uuid.UUID, attempt: int = 1, type: str = TYPE) -> dict[str, Any]:
    return {"type": type, "task_id": str(task_id), "attempt": attempt}


def dead_task(client: redis.Redis) -> TaskRecord:
    """A task whose only attempt ran and failed for good; its ring is consumed."""
    task_id = enqueue(CHANNEL, TYPE, {"n": 1}, max_attempts=1)
    assert receive() == ring_of(task_id)
    assert store.claim(
        task_id, 1, worker="w:1", lease_seconds=30, default_max_attempts=1
    )
    failure = store.Failure(Outcome.FAILED, "ValueError", "bad input")
    decision = Decision(Action.GIVE_UP, None, "gave up after 1 of 1 attempts")
    task = store.fail(task_id, 1, worker="w:1", failure=failure, decision=decision)
    assert task is not None and task.status == Status.DEAD
    assert held(client) == []
    return task


# enqueue -------------------------------------------------------------------------


def test_enqueue_stores_the_task_and_rings_its_first_attempt(
    redis_client: redis.Redis,
) -> None:
    before = timezone.now()
    task_id = enqueue(CHANNEL, TYPE, {"image": 7, "sizes": [64, 128]})
    assert isinstance(task_id, uuid.UUID)
    task = TaskRecord.objects.get(pk=task_id)
    assert task.status == Status.QUEUED
    assert (task.channel, task.type) == (CHANNEL, TYPE)
    assert task.payload == {"image": 7, "sizes": [64, 128]}
    assert task.attempt == 0
    assert task.max_attempts is None
    assert task.due_at is not None and task.due_at > before
    assert receive() == ring_of(task_id)
    assert held(redis_client) == []


def test_enqueue_without_a_payload_stores_an_empty_dict(
    redis_client: redis.Redis,
) -> None:
    task_id = enqueue(CHANNEL, TYPE)
    assert TaskRecord.objects.get(pk=task_id).payload == {}
    assert receive() == ring_of(task_id)


def test_enqueue_keeps_an_explicit_max_attempts(redis_client: redis.Redis) -> None:
    task_id = enqueue(CHANNEL, TYPE, {}, max_attempts=3)
    assert TaskRecord.objects.get(pk=task_id).max_attempts == 3
    assert held(redis_client) == [ring_of(task_id)]


def test_each_enqueue_rings_its_own_task(redis_client: redis.Redis) -> None:
    ids = [enqueue(CHANNEL, TYPE, {"n": n}) for n in range(3)]
    assert len(set(ids)) == 3
    assert held(redis_client) == [ring_of(task_id) for task_id in ids]


def test_rings_waiting_to_be_sent_go_out_together_in_order(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = get_channel_layer()
    send = layer.send
    first_sent, go_on = threading.Event(), threading.Event()

    async def slow_send(channel: str, message: dict[str, Any]) -> None:
        await send(channel, message)
        if not first_sent.is_set():
            first_sent.set()
            await asyncio.to_thread(go_on.wait, 5)  # the next rings pile up

    monkeypatch.setattr(layer, "send", slow_send)
    first = enqueue(CHANNEL, TYPE)
    assert first_sent.wait(5)
    rest = [enqueue(CHANNEL, TYPE, {"n": n}) for n in range(5)]
    go_on.set()
    assert messages(redis_client) == [
        ring_of(first),
        {
            "type": doorbell.RINGS_TYPE,
            "rings": [ring_of(task_id) for task_id in rest],
        },
    ]


def test_a_batch_of_rings_holds_at_most_max_rings_per_message(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doorbell, "MAX_RINGS_PER_MESSAGE", 2)
    with transaction.atomic():  # the rings are handed over together at commit
        ids = [enqueue(CHANNEL, TYPE, {"n": n}) for n in range(5)]
    sizes = [len(doorbell.rings_in(m)) for m in messages(redis_client)]
    assert max(sizes) <= 2 and sum(sizes) == 5
    assert held(redis_client) == [ring_of(task_id) for task_id in ids]


def test_inside_a_transaction_nothing_is_rung_until_commit(
    redis_client: redis.Redis,
) -> None:
    with transaction.atomic():
        task_id = enqueue(CHANNEL, TYPE, {"n": 1})
        assert held(redis_client) == []
        send(MARKER)
    assert TaskRecord.objects.filter(pk=task_id, status=Status.QUEUED).exists()
    # The ring was sent after the marker, that is, after the block committed.
    assert receive() == MARKER
    assert receive() == ring_of(task_id)


def test_a_rolled_back_enqueue_stores_nothing_and_rings_nothing(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        enqueue(CHANNEL, TYPE, {"n": 1})
        raise Rollback
    assert TaskRecord.objects.count() == 0
    assert held(redis_client) == []
    # Whatever is rung next arrives first: nothing from the rolled-back block.
    later = enqueue(CHANNEL, TYPE, {"n": 2})
    assert receive() == ring_of(later)
    assert held(redis_client) == []


def test_a_rolled_back_savepoint_rings_only_what_was_kept(
    redis_client: redis.Redis,
) -> None:
    with transaction.atomic():
        kept = enqueue(CHANNEL, TYPE, {"n": 1})
        with pytest.raises(Rollback), transaction.atomic():
            enqueue(CHANNEL, TYPE, {"n": 2})
            raise Rollback
    assert list(TaskRecord.objects.values_list("pk", flat=True)) == [kept]
    assert held(redis_client) == [ring_of(kept)]


VALID_CHANNELS = ["examples", "a", "A-z_0.9", "x" * 99]


@pytest.mark.parametrize("channel", VALID_CHANNELS)
def test_valid_channel_names_are_accepted(
    redis_client: redis.Redis, channel: str
) -> None:
    task_id = enqueue(channel, TYPE)
    assert held(redis_client, channel) == [ring_of(task_id)]


BAD_CHANNELS = {
    "empty": "",
    "space": "my channel",
    "bang": "worker!abc",
    "100 chars": "x" * 100,
    "slash": "a/b",
    "non-ASCII": "café",
    "None": None,
    "int": 42,
    "bytes": b"examples",
}


@pytest.mark.parametrize("channel", BAD_CHANNELS.values(), ids=BAD_CHANNELS.keys())
def test_invalid_channel_names_are_refused_and_nothing_is_stored(
    redis_client: redis.Redis, channel: Any
) -> None:
    with pytest.raises(ValueError, match="channel"):
        enqueue(channel, TYPE, {"n": 1})
    assert TaskRecord.objects.count() == 0
    assert redis_client.keys("*") == []


VALID_TYPES = ["run", "thumbnail.generate", "T9_x.y", "a" * 200]


@pytest.mark.parametrize("type", VALID_TYPES)
def test_valid_types_are_accepted(redis_client: redis.Redis, type: str) -> None:
    task_id = enqueue(CHANNEL, type)
    assert TaskRecord.objects.get(pk=task_id).type == type
    assert held(redis_client) == [ring_of(task_id, type=type)]


BAD_TYPES = {
    "leading underscore": "_private",
    "leading dot": ".start",
    "dots only": "..",
    "empty": "",
    "digit first": "1st.task",
    "hyphen": "thumbnail-generate",
    "space": "thumbnail generate",
    "201 chars": "a" * 201,
    "None": None,
    "int": 3,
}


@pytest.mark.parametrize("type", BAD_TYPES.values(), ids=BAD_TYPES.keys())
def test_invalid_types_are_refused_and_nothing_is_stored(
    redis_client: redis.Redis, type: Any
) -> None:
    with pytest.raises(ValueError, match="type"):
        enqueue(CHANNEL, type, {"n": 1})
    assert TaskRecord.objects.count() == 0
    assert redis_client.keys("*") == []


@pytest.mark.parametrize(
    ("channel", "type"),
    [(CHANNEL + "\n", TYPE), (CHANNEL, TYPE + "\n")],
    ids=["channel", "type"],
)
def test_a_trailing_newline_is_refused(
    redis_client: redis.Redis, channel: str, type: str
) -> None:
    with pytest.raises(ValueError):
        enqueue(channel, type, {"n": 1})
    assert TaskRecord.objects.count() == 0


@pytest.mark.parametrize("max_attempts", [0, -1, True, False, "3", 2.0, 1.5])
def test_a_bad_max_attempts_is_refused_and_nothing_is_stored(
    redis_client: redis.Redis, max_attempts: Any
) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        enqueue(CHANNEL, TYPE, {"n": 1}, max_attempts=max_attempts)
    assert TaskRecord.objects.count() == 0
    assert redis_client.keys("*") == []


def test_a_bad_payload_names_its_key_and_stores_nothing(
    redis_client: redis.Redis,
) -> None:
    payload = {"items": [{"ok": 1}, {"when": timezone.now()}]}
    with pytest.raises(InvalidPayload) as caught:
        enqueue(CHANNEL, TYPE, payload)
    assert caught.value.path == "payload['items'][1]['when']"
    assert TaskRecord.objects.count() == 0
    assert redis_client.keys("*") == []


@pytest.mark.parametrize(
    "text", ["nul\x00byte", "lone \ud83d"], ids=["NUL", "lone surrogate"]
)
def test_a_str_the_database_cannot_store_is_refused_by_name(
    redis_client: redis.Redis, text: str
) -> None:
    # PostgreSQL's jsonb refuses both; the error must name the field instead.
    with pytest.raises(InvalidPayload) as caught:
        enqueue(CHANNEL, TYPE, {"note": text})
    assert caught.value.path == "payload['note']"
    assert TaskRecord.objects.count() == 0
    assert redis_client.keys("*") == []


def test_an_authenticated_user_owns_the_task(redis_client: redis.Redis) -> None:
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    task_id = enqueue(CHANNEL, TYPE, {}, user=user)
    assert TaskRecord.objects.get(pk=task_id).owner_id == user.pk


@pytest.mark.parametrize("user", [AnonymousUser(), None], ids=["anonymous", "none"])
def test_an_anonymous_task_has_no_owner(redis_client: redis.Redis, user: Any) -> None:
    task_id = enqueue(CHANNEL, TYPE, {}, user=user)
    assert TaskRecord.objects.get(pk=task_id).owner_id is None


def test_an_idempotency_key_enqueues_and_rings_once(
    redis_client: redis.Redis,
) -> None:
    first = enqueue(CHANNEL, TYPE, {"n": 1}, idempotency_key="order-42")
    again = enqueue(CHANNEL, TYPE, {"n": 1}, idempotency_key="order-42")
    assert again == first
    assert TaskRecord.objects.get().payload == {"n": 1}
    assert held(redis_client) == [ring_of(first)]


def test_an_idempotency_key_is_free_again_after_cancel(
    redis_client: redis.Redis,
) -> None:
    first = enqueue(CHANNEL, TYPE, {}, idempotency_key="order-42")
    producer.cancel(first)
    second = enqueue(CHANNEL, TYPE, {}, idempotency_key="order-42")
    assert second != first
    assert held(redis_client) == [ring_of(first), ring_of(second)]


# aenqueue ------------------------------------------------------------------------


async def test_aenqueue_stores_the_task_and_rings_it(
    redis_client: redis.Redis,
) -> None:
    task_id = await aenqueue(CHANNEL, TYPE, {"image": 9}, max_attempts=2)
    assert isinstance(task_id, uuid.UUID)
    task = await store.aget_task(task_id)
    assert (task.status, task.payload, task.max_attempts) == (
        Status.QUEUED,
        {"image": 9},
        2,
    )
    assert await areceive() == ring_of(task_id)


async def test_aenqueue_with_an_idempotency_key_rings_once(
    redis_client: redis.Redis,
) -> None:
    first = await aenqueue(CHANNEL, TYPE, {}, idempotency_key="k")
    again = await aenqueue(CHANNEL, TYPE, {}, idempotency_key="k")
    assert again == first
    await get_channel_layer().send(CHANNEL, MARKER)
    assert await areceive() == ring_of(first)
    assert await areceive() == MARKER


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("bad channel", TYPE, {}), {}, ValueError),
        ((CHANNEL, "_bad", {}), {}, ValueError),
        ((CHANNEL, TYPE, {}), {"max_attempts": 0}, ValueError),
        ((CHANNEL, TYPE, {"x": {1, 2}}), {}, InvalidPayload),
    ],
    ids=["channel", "type", "max_attempts", "payload"],
)
async def test_aenqueue_refuses_bad_arguments_and_stores_nothing(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await aenqueue(*args, **kwargs)
    # channels' wrapper closes the connection it opens in the database thread.
    assert await database_sync_to_async(TaskRecord.objects.count)() == 0


# ChannelFull ---------------------------------------------------------------------


@pytest.fixture
def tiny_channels(redis_client: redis.Redis) -> Iterator[None]:
    """The same Redis, but a channel holds one message."""
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["capacity"] = 1
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS=layers):
            channel_layers.backends.clear()
            assert get_channel_layer().capacity == 1
            yield
    finally:
        channel_layers.backends.clear()


def test_a_full_channel_delays_tasks_and_loses_none(
    tiny_channels: None, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="retrying_consumers.doorbell")
    before = timezone.now()
    ids = []
    for n in range(3):  # one ring per message: each counts against the capacity
        ids.append(enqueue(CHANNEL, TYPE, {"n": n}))
        assert doorbell.flush()
    assert len(set(ids)) == 3
    tasks = TaskRecord.objects.filter(pk__in=ids)
    assert tasks.count() == 3
    for task in tasks:
        assert task.status == Status.QUEUED
        # due_at is when the scheduler rings it again if nobody claimed it.
        assert task.due_at is not None and task.due_at > before
    assert held(redis_client) == [ring_of(ids[0])]
    refused = [
        record
        for record in caplog.records
        if record.name == "retrying_consumers.doorbell"
    ]
    assert [record.levelno for record in refused] == [logging.WARNING] * 2
    assert [record.task_id for record in refused] == [str(ids[1]), str(ids[2])]
    assert {record.channel for record in refused} == {CHANNEL}


# retry_now and cancel ------------------------------------------------------------


def test_retry_now_of_a_dead_task_rings_the_next_attempt_after_commit(
    redis_client: redis.Redis,
) -> None:
    dead = dead_task(redis_client)
    with transaction.atomic():
        task = producer.retry_now(dead.id)
        assert task.status == Status.QUEUED
        # enqueue fixed a budget of 1 attempt; the re-drive gets it again.
        assert (task.attempt, task.drive_offset, task.max_attempts) == (1, 1, 2)
        assert held(redis_client) == []
        send(MARKER)
    assert receive() == MARKER
    assert receive() == ring_of(dead.id, attempt=2)
    again = store.claim(
        dead.id, 2, worker="w:2", lease_seconds=30, default_max_attempts=3
    )
    assert again is not None and again.max_attempts == 1 + 1


def test_retry_now_of_a_dead_task_rolled_back_rings_nothing(
    redis_client: redis.Redis,
) -> None:
    dead = dead_task(redis_client)
    with pytest.raises(Rollback), transaction.atomic():
        producer.retry_now(dead.id)
        raise Rollback
    assert TaskRecord.objects.get(pk=dead.id).status == Status.DEAD
    assert held(redis_client) == []


def test_retry_now_of_a_waiting_retry_rings_it_at_once(
    redis_client: redis.Redis,
) -> None:
    task_id = enqueue(CHANNEL, TYPE)
    assert receive() == ring_of(task_id)
    store.claim(task_id, 1, worker="w:1", lease_seconds=30, default_max_attempts=5)
    failure = store.Failure(Outcome.FAILED, "ConnectionError", "refused")
    decision = Decision(Action.RETRY, 600.0, "retry in 600 s")
    store.fail(task_id, 1, worker="w:1", failure=failure, decision=decision)
    task = producer.retry_now(task_id)
    assert task.status == Status.QUEUED
    assert receive() == ring_of(task_id, attempt=2)


@pytest.mark.parametrize("state", ["running", "succeeded"])
def test_retry_now_refuses_running_and_succeeded_tasks(
    redis_client: redis.Redis, state: str
) -> None:
    task_id = enqueue(CHANNEL, TYPE)
    assert receive() == ring_of(task_id)
    store.claim(task_id, 1, worker="w:1", lease_seconds=30, default_max_attempts=5)
    if state == "succeeded":
        store.succeed(task_id, 1, worker="w:1")
    with pytest.raises(ValueError):
        producer.retry_now(task_id)
    assert TaskRecord.objects.get(pk=task_id).status == state
    assert held(redis_client) == []


def test_retry_now_of_an_unknown_task_raises_task_not_found(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(TaskNotFound):
        producer.retry_now(uuid.uuid4())
    assert redis_client.keys("*") == []


def test_cancel_ends_a_queued_task_and_its_ring_finds_nothing(
    redis_client: redis.Redis,
) -> None:
    task_id = enqueue(CHANNEL, TYPE)
    task = producer.cancel(task_id, reason="not needed")
    assert (task.status, task.reason) == (Status.CANCELLED, "not needed")
    assert TaskRecord.objects.get(pk=task_id).status == Status.CANCELLED
    assert held(redis_client) == [ring_of(task_id)]
    stale = receive()
    late = store.claim(
        stale["task_id"],
        stale["attempt"],
        worker="w:1",
        lease_seconds=30,
        default_max_attempts=5,
    )
    assert late is None


def test_cancel_of_a_finished_task_returns_it_unchanged(
    redis_client: redis.Redis,
) -> None:
    dead = dead_task(redis_client)
    task = producer.cancel(dead.id)
    assert task.status == Status.DEAD
    assert task.reason == dead.reason
    assert task.finished_at == dead.finished_at


def test_cancel_of_an_unknown_task_raises_task_not_found() -> None:
    with pytest.raises(TaskNotFound):
        producer.cancel(uuid.uuid4())
