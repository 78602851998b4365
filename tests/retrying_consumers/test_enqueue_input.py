"""What ``enqueue`` and ``aenqueue`` refuse: one clear error, nothing stored.

Every refusal must be the same on SQLite and PostgreSQL: an ``InvalidArgument``
naming the argument, or an ``InvalidPayload`` naming the part of the payload,
raised before anything reaches the store or the channel layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.test import override_settings
from django.utils.functional import SimpleLazyObject

from retrying_consumers.exceptions import InvalidArgument, InvalidPayload
from retrying_consumers.models import TaskRecord
from retrying_consumers.producer import aenqueue, enqueue

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "enqueue-input"
TYPE = "input.check"
#: The largest max_attempts enqueue takes (the columns hold 2**31 - 1, and a
#: re-drive adds the attempts already made).
MAX_ATTEMPTS = 1_000_000
SETTING = "RETRYING_CONSUMERS['MAX_PAYLOAD_BYTES']"


def unsaved_user() -> Any:
    return get_user_model()(username="unsaved")


def deleted_user() -> Any:
    user = get_user_model().objects.create_user("ghost", password="pw-ghost-123")
    get_user_model().objects.filter(pk=user.pk).delete()
    return user


def far_future_west() -> datetime:
    # Valid where it is, but past year 9999 in UTC, where stores keep it.
    return datetime.max.replace(tzinfo=timezone(timedelta(hours=-14)))


#: Arguments that must be refused: name -> (kwargs factory, argument named).
REFUSED: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "empty key": (lambda: {"idempotency_key": ""}, "idempotency_key"),
    "201-character key": (lambda: {"idempotency_key": "k" * 201}, "idempotency_key"),
    "key with NUL": (lambda: {"idempotency_key": "order\x0042"}, "idempotency_key"),
    "key with lone surrogate": (
        lambda: {"idempotency_key": "order-\ud83d"},
        "idempotency_key",
    ),
    "int key": (lambda: {"idempotency_key": 123}, "idempotency_key"),
    "bytes key": (lambda: {"idempotency_key": b"abc"}, "idempotency_key"),
    "max_attempts 2**31": (lambda: {"max_attempts": 2**31}, "max_attempts"),
    "max_attempts 10**20": (lambda: {"max_attempts": 10**20}, "max_attempts"),
    "max_attempts past the limit": (
        lambda: {"max_attempts": MAX_ATTEMPTS + 1},
        "max_attempts",
    ),
    "user of another kind": (lambda: {"user": object()}, "user"),
    "user given as a name": (lambda: {"user": "alice"}, "user"),
    "user given as a pk": (lambda: {"user": 1}, "user"),
    "unsaved user": (lambda: {"user": unsaved_user()}, "user"),
    "deleted user": (lambda: {"user": deleted_user()}, "user"),
    "run_after as text": (
        lambda: {"run_after": "2030-01-01T00:00:00+00:00"},
        "run_after",
    ),
    "run_after as a date": (lambda: {"run_after": date(2030, 1, 1)}, "run_after"),
    "run_after past year 9999 in UTC": (
        lambda: {"run_after": far_future_west()},
        "run_after",
    ),
    "channel with NUL": (lambda: {"channel": "a\x00b"}, "channel"),
    "channel of 10,000 characters": (lambda: {"channel": "c" * 10_000}, "channel"),
    "type with a lone surrogate": (lambda: {"type": "a\ud83d"}, "type"),
    "type as bytes": (lambda: {"type": b"input.check"}, "type"),
}


def call_enqueue(kwargs: dict[str, Any]) -> Any:
    arguments = {"channel": CHANNEL, "type": TYPE, **kwargs}
    return enqueue(arguments.pop("channel"), arguments.pop("type"), **arguments)


async def call_aenqueue(kwargs: dict[str, Any]) -> Any:
    arguments = {"channel": CHANNEL, "type": TYPE, **kwargs}
    return await aenqueue(arguments.pop("channel"), arguments.pop("type"), **arguments)


def refusal(kwargs: dict[str, Any]) -> Exception:
    with pytest.raises(Exception) as caught:
        call_enqueue(kwargs)
    return caught.value


@pytest.mark.parametrize("case", REFUSED.keys())
def test_a_bad_argument_is_named_and_nothing_is_stored(
    redis_client: redis.Redis, case: str
) -> None:
    factory, argument = REFUSED[case]
    with pytest.raises(InvalidArgument) as caught:
        call_enqueue(factory())
    assert caught.value.argument == argument
    assert str(caught.value).startswith(f"{argument}: ")
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 300  # no 10,000-character echo
    assert not TaskRecord.objects.exists()
    assert redis_client.keys("*") == []


@pytest.mark.parametrize("case", REFUSED.keys())
async def test_aenqueue_refuses_exactly_as_enqueue_does(
    redis_client: redis.Redis, case: str
) -> None:
    factory, _ = REFUSED[case]
    kwargs = await database_sync_to_async(factory)()
    expected = await database_sync_to_async(refusal)(kwargs)
    with pytest.raises(InvalidArgument) as caught:
        await call_aenqueue(kwargs)
    assert (type(caught.value), str(caught.value)) == (type(expected), str(expected))
    assert not await database_sync_to_async(TaskRecord.objects.exists)()
    assert redis_client.keys("*") == []


def test_a_user_missing_from_the_store_is_refused_inside_a_transaction(
    redis_client: redis.Redis,
) -> None:
    # PostgreSQL checks the owner's foreign key only at commit: the error must
    # come from enqueue itself, as on SQLite.
    ghost = deleted_user()
    with transaction.atomic():
        with pytest.raises(InvalidArgument) as caught:
            enqueue(CHANNEL, TYPE, user=ghost)
        assert caught.value.argument == "user"
    assert not TaskRecord.objects.exists()


ACCEPTED_KEYS = {
    "200 ASCII characters": "k" * 200,
    "200 two-byte characters": "é" * 200,
    "200 astral characters": "\U0001d11e" * 200,
    "one space": " ",
}


@pytest.mark.parametrize("key", ACCEPTED_KEYS.values(), ids=ACCEPTED_KEYS.keys())
def test_keys_that_fit_the_column_are_kept_exactly(
    redis_client: redis.Redis, key: str
) -> None:
    task_id = enqueue(CHANNEL, TYPE, idempotency_key=key)
    assert TaskRecord.objects.get(pk=task_id).idempotency_key == key
    assert enqueue(CHANNEL, TYPE, idempotency_key=key) == task_id


def test_the_largest_max_attempts_is_kept(redis_client: redis.Redis) -> None:
    task_id = enqueue(CHANNEL, TYPE, max_attempts=MAX_ATTEMPTS)
    assert TaskRecord.objects.get(pk=task_id).max_attempts == MAX_ATTEMPTS


def test_run_after_late_in_year_9999_is_kept(redis_client: redis.Redis) -> None:
    when = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    task_id = enqueue(CHANNEL, TYPE, run_after=when)
    assert TaskRecord.objects.get(pk=task_id).due_at == when


def test_a_lazy_user_as_on_a_request_owns_the_task(redis_client: redis.Redis) -> None:
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    task_id = enqueue(CHANNEL, TYPE, user=SimpleLazyObject(lambda: user))
    assert TaskRecord.objects.get(pk=task_id).owner_id == user.pk


def test_a_lazy_anonymous_user_owns_nothing(redis_client: redis.Redis) -> None:
    task_id = enqueue(CHANNEL, TYPE, user=SimpleLazyObject(AnonymousUser))
    assert TaskRecord.objects.get(pk=task_id).owner_id is None


# The payload's size ----------------------------------------------------------------


def json_size(payload: dict[str, Any]) -> int:
    """Bytes of the payload's compact UTF-8 JSON text: what the limit counts."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode())


SIZED = {
    "ASCII": lambda n: {"s": "x" * n},
    "two-byte characters": lambda n: {"s": "é" * (n // 2) + "x" * (n % 2)},
    "escaped newlines": lambda n: {"s": "\n" * (n // 2) + "x" * (n % 2)},
    "many small values": lambda n: {"xs": [1] * ((n - 1) // 2) + [12][: n % 2]},
}


@pytest.mark.parametrize("make", SIZED.values(), ids=SIZED.keys())
@override_settings(RETRYING_CONSUMERS={"MAX_PAYLOAD_BYTES": 100})
def test_a_payload_at_the_limit_is_kept_and_one_byte_more_is_refused(
    redis_client: redis.Redis, make: Callable[[int], dict[str, Any]]
) -> None:
    fits = next(make(n) for n in range(200, 0, -1) if json_size(make(n)) == 100)
    task_id = enqueue(CHANNEL, TYPE, fits)
    assert TaskRecord.objects.get(pk=task_id).payload == fits
    over = next(make(n) for n in range(1, 200) if json_size(make(n)) == 101)
    with pytest.raises(InvalidPayload) as caught:
        enqueue(CHANNEL, TYPE, over)
    assert caught.value.path == "payload"
    assert "100 bytes" in caught.value.problem
    assert SETTING in caught.value.problem
    assert TaskRecord.objects.count() == 1


def test_the_default_limit_is_one_mebibyte(redis_client: redis.Redis) -> None:
    limit = 1024 * 1024
    fits = {"s": "x" * (limit - json_size({"s": ""}))}
    assert json_size(fits) == limit
    enqueue(CHANNEL, TYPE, fits)
    with pytest.raises(InvalidPayload) as caught:
        enqueue(CHANNEL, TYPE, {"s": "x" * limit})
    assert caught.value.path == "payload"
    assert f"{limit} bytes" in caught.value.problem
    assert SETTING in caught.value.problem
    assert TaskRecord.objects.count() == 1


def shared_levels(levels: int) -> list[Any]:
    """A list that JSON writes out as 2**levels leaves, held in a few objects."""
    level: list[Any] = []
    for _ in range(levels):
        level = [level, level]
    return level


@pytest.mark.timeout(30)
def test_a_payload_that_unfolds_past_the_limit_is_refused_quickly(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        enqueue(CHANNEL, TYPE, {"tree": shared_levels(60)})
    assert caught.value.path == "payload"
    assert SETTING in caught.value.problem
    assert not TaskRecord.objects.exists()


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


PAYLOADS_REFUSED = {
    "too big": {"s": "x" * (1024 * 1024)},
    "nested 10,000 deep": {"deep": nested_lists(10_000)},
    "NUL in a value": {"note": "a\x00b"},
    "bytes value": {"blob": b"abc"},
}


@pytest.mark.parametrize("case", PAYLOADS_REFUSED.keys())
async def test_aenqueue_refuses_payloads_exactly_as_enqueue_does(
    redis_client: redis.Redis, case: str
) -> None:
    payload = PAYLOADS_REFUSED[case]
    expected = await database_sync_to_async(refusal)({"payload": payload})
    assert isinstance(expected, InvalidPayload)
    with pytest.raises(InvalidPayload) as caught:
        await aenqueue(CHANNEL, TYPE, payload)
    assert (caught.value.path, caught.value.problem) == (
        expected.path,
        expected.problem,
    )
    assert not await database_sync_to_async(TaskRecord.objects.exists)()
