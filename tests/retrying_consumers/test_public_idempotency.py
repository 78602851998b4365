"""An idempotency key names one piece of work: reused for other work, it is
refused instead of quietly returning the first task."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from retrying_consumers import IdempotencyConflict, aenqueue, cancel, enqueue
from retrying_consumers.models import Status, TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "examples-test"
TYPE = "thumbnail.generate"
KEY = "order-42"
PAYLOAD = {
    "image": 7,
    "sizes": [64, 128],
    "crop": {"x": 0.5, "keep": True},
    "big": 1e18,
    "tiny": 1e-7,
}


@pytest.fixture(autouse=True)
def _redis(redis_client: redis.Redis) -> None:
    """Rings go to the session's Redis, emptied first."""


DIFFERENT = {
    "payload value": ((CHANNEL, TYPE, {**PAYLOAD, "image": 8}), "payload"),
    "payload key": ((CHANNEL, TYPE, {**PAYLOAD, "extra": None}), "payload"),
    "bool for int": (
        (CHANNEL, TYPE, {**PAYLOAD, "crop": {"x": 0.5, "keep": 1}}),
        "payload",
    ),
    "no payload": ((CHANNEL, TYPE, None), "payload"),
    "channel": (("examples-other", TYPE, PAYLOAD), "channel"),
    "type": ((CHANNEL, "thumbnail.purge", PAYLOAD), "type"),
}


@pytest.mark.parametrize(("args", "field"), DIFFERENT.values(), ids=DIFFERENT.keys())
def test_a_key_reused_for_other_work_is_refused(
    args: tuple[Any, ...], field: str
) -> None:
    first = enqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    with pytest.raises(IdempotencyConflict) as caught:
        enqueue(*args, idempotency_key=KEY)
    error = caught.value
    assert (error.argument, error.key, error.task_id) == ("idempotency_key", KEY, first)
    assert field in error.differs
    assert KEY in str(error) and str(first) in str(error)
    assert TaskRecord.objects.get().payload == PAYLOAD


async def test_aenqueue_refuses_a_key_reused_for_other_work() -> None:
    first = await aenqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    with pytest.raises(IdempotencyConflict) as caught:
        await aenqueue(CHANNEL, TYPE, {"image": 8}, idempotency_key=KEY)
    assert caught.value.task_id == first
    assert caught.value.differs == ("payload",)


def test_the_same_work_again_returns_the_first_task() -> None:
    first = enqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    # The same values as read back from the store (PostgreSQL's jsonb gives
    # 1e18 back as an int), with keys in another order.
    again = {
        "tiny": 1e-7,
        "big": 10**18,
        "crop": {"keep": True, "x": 0.5},
        "sizes": [64.0, 128],
        "image": 7,
    }
    assert enqueue(CHANNEL, TYPE, again, idempotency_key=KEY) == first
    assert TaskRecord.objects.count() == 1


async def test_aenqueue_of_the_same_work_returns_the_first_task() -> None:
    first = await aenqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    assert await aenqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY) == first


def test_a_succeeded_task_keeps_its_key_against_other_work() -> None:
    first = enqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    TaskRecord.objects.filter(pk=first).update(status=Status.SUCCEEDED)
    with pytest.raises(IdempotencyConflict):
        enqueue(CHANNEL, TYPE, {"image": 8}, idempotency_key=KEY)


def test_after_cancel_the_key_takes_other_work() -> None:
    first = enqueue(CHANNEL, TYPE, PAYLOAD, idempotency_key=KEY)
    cancel(first)
    second = enqueue(CHANNEL, TYPE, {"image": 8}, idempotency_key=KEY)
    assert second != first
    assert TaskRecord.objects.get(pk=second).payload == {"image": 8}
