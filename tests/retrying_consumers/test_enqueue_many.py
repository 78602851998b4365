"""Tests for enqueue_many and aenqueue_many, with the real channels-redis layer.

Rings are read from the test Redis itself after ``doorbell.flush``; the same
tests run on SQLite and, with ``DATABASE_URL``, on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

import retrying_consumers
from retrying_consumers import doorbell, sql
from retrying_consumers.exceptions import InvalidArgument, InvalidPayload
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.producer import aenqueue_many, enqueue_many

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "many-test"
TYPE = "thumbnail.generate"


class Rollback(Exception):
    """Raised to roll an atomic block back."""


def held(client: redis.Redis) -> list[dict[str, Any]]:
    """The rings waiting on ``CHANNEL``, oldest first, batches opened."""
    assert doorbell.flush()
    layer = get_channel_layer()
    raw = client.zrange(layer.prefix + CHANNEL, 0, -1)
    return [r for m in raw for r in doorbell.rings_in(layer.deserialize(m))]


def rings_for(ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    return [{"type": TYPE, "task_id": str(i), "attempt": 1} for i in ids]


def test_it_is_exported() -> None:
    assert retrying_consumers.enqueue_many is enqueue_many
    assert retrying_consumers.aenqueue_many is aenqueue_many


def test_ids_come_back_in_the_order_of_the_payloads(
    redis_client: redis.Redis,
) -> None:
    ids = enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(7)], max_attempts=3)
    assert len(set(ids)) == 7
    tasks = TaskRecord.objects.in_bulk(ids)
    assert [tasks[i].payload for i in ids] == [{"n": n} for n in range(7)]
    assert {(t.status, t.channel, t.type, t.max_attempts) for t in tasks.values()} == {
        (Status.QUEUED, CHANNEL, TYPE, 3)
    }
    assert held(redis_client) == rings_for(ids)


def test_a_batch_bigger_than_one_statement_is_stored_whole(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "MAX_INSERT_VALUES", 1)  # one row per INSERT
    with CaptureQueriesContext(connection) as queries:
        ids = enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(5)])
    inserts = [q for q in queries if q["sql"].startswith("INSERT")]
    # PostgreSQL (psycopg 3) takes the rows in one COPY, which Django does
    # not log; elsewhere, one INSERT per row here.
    assert len(inserts) == (0 if sql.copies_rows() else 5)
    tasks = TaskRecord.objects.in_bulk(ids)
    assert [tasks[i].payload for i in ids] == [{"n": n} for n in range(5)]
    assert held(redis_client) == rings_for(ids)


def test_a_row_the_database_refuses_stores_and_rings_nothing(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "MAX_INSERT_VALUES", 1)
    real = sql._insert_values
    rows: list[list[Any]] = []

    def clashing(s: Any, task: TaskRecord) -> list[Any]:
        row = real(s, task)
        if len(rows) == 3:  # the fourth row takes the first one's id
            row[0] = rows[0][0]
        rows.append(row)
        return row

    monkeypatch.setattr(sql, "_insert_values", clashing)
    with pytest.raises(IntegrityError):
        enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(5)])
    assert TaskRecord.objects.count() == 0
    assert held(redis_client) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"x": datetime(2026, 1, 1, tzinfo=UTC)}, "payloads[3]['x']: datetime"),
        ({"x": [1, {2: "a"}]}, "payloads[3]['x'][1]"),
        ("text", "payloads[3]: must be a dict, not str"),
    ],
)
def test_a_bad_payload_is_named_by_index_and_nothing_is_stored(
    redis_client: redis.Redis, bad: Any, message: str
) -> None:
    payloads = [{"n": 0}, {"n": 1}, {"n": 2}, bad, {"n": 4}]
    with pytest.raises(InvalidPayload) as raised:
        enqueue_many(CHANNEL, TYPE, payloads)
    assert str(raised.value).startswith(message)
    assert raised.value.path.startswith("payloads[3]")
    assert TaskRecord.objects.count() == 0
    assert held(redis_client) == []


def test_other_arguments_are_checked_as_enqueue_checks_them() -> None:
    with pytest.raises(InvalidArgument, match=r"^channel: "):
        enqueue_many("bad chan", TYPE, [{}])
    with pytest.raises(InvalidArgument, match=r"^max_attempts: "):
        enqueue_many(CHANNEL, TYPE, [{}], max_attempts=0)
    with pytest.raises(InvalidArgument, match=r"^payloads: must be a list of dicts"):
        enqueue_many(CHANNEL, TYPE, {"n": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        enqueue_many(CHANNEL, TYPE, [{}], idempotency_key="k")  # type: ignore[call-arg]
    assert TaskRecord.objects.count() == 0


def test_an_empty_batch_stores_nothing(redis_client: redis.Redis) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert enqueue_many(CHANNEL, TYPE, []) == []
    assert len(queries) == 0
    assert held(redis_client) == []


def test_none_is_an_empty_payload(redis_client: redis.Redis) -> None:
    (task_id,) = enqueue_many(CHANNEL, TYPE, [None])
    assert TaskRecord.objects.get(pk=task_id).payload == {}


def test_a_rolled_back_block_stores_and_rings_nothing(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(3)])
        raise Rollback
    assert TaskRecord.objects.count() == 0
    assert held(redis_client) == []


def test_rings_are_sent_only_after_the_commit(redis_client: redis.Redis) -> None:
    with transaction.atomic():
        ids = enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(3)])
        assert held(redis_client) == []
    assert held(redis_client) == rings_for(ids)


def test_the_batch_is_rung_as_few_messages(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doorbell, "MAX_RINGS_PER_MESSAGE", 4)
    ids = enqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(10)])
    assert doorbell.flush()
    assert redis_client.zcard(get_channel_layer().prefix + CHANNEL) == 3
    assert held(redis_client) == rings_for(ids)


def test_owner_and_deferral_apply_to_every_task(redis_client: redis.Redis) -> None:
    user = get_user_model().objects.create(username="ada")
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = enqueue_many(CHANNEL, TYPE, [{}, {}], user=user, run_after=later)
    tasks = TaskRecord.objects.filter(pk__in=ids)
    assert {(t.owner_id, t.due_at) for t in tasks} == {(user.pk, later)}
    assert held(redis_client) == []  # deferred: the scheduler rings them


def test_a_deleted_owner_is_refused(redis_client: redis.Redis) -> None:
    user = get_user_model().objects.create(username="ada")
    get_user_model().objects.filter(pk=user.pk).delete()
    with pytest.raises(InvalidArgument, match=r"^user: no "):
        enqueue_many(CHANNEL, TYPE, [{}], user=user)
    assert TaskRecord.objects.count() == 0


async def test_the_async_twin_stores_and_rings_in_order(
    redis_client: redis.Redis,
) -> None:
    ids = await aenqueue_many(CHANNEL, TYPE, [{"n": n} for n in range(5)])
    rows = await TaskRecord.objects.filter(pk__in=ids).ain_bulk()
    assert [rows[i].payload for i in ids] == [{"n": n} for n in range(5)]
    assert held(redis_client) == rings_for(ids)


async def test_the_async_twin_checks_every_payload_first(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(InvalidPayload, match=r"^payloads\[1\]\['s'\]: "):
        await aenqueue_many(CHANNEL, TYPE, [{}, {"s": {1, 2}}])
    assert await TaskRecord.objects.acount() == 0
    assert held(redis_client) == []
