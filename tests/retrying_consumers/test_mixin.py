"""RetryMixin on worker channels, with the real Redis channel layer and the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from tenacity import wait_fixed

from retrying_consumers import (
    GiveUp,
    RetryLater,
    RetryMixin,
    RetryPolicy,
    doorbell,
    signals,
    store,
)
from retrying_consumers.events import task_group
from retrying_consumers.exceptions import ConfigurationError
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "mixin-test"
calls: list[tuple[str, int]] = []


class Flaky(Exception):
    pass


class Unwanted(Exception):
    pass


class Consumer(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=3, wait=wait_fixed(30))
    retry_policies = {
        "job.quick": RetryPolicy(max_attempts=2, wait=wait_fixed(0), time_limit=0.2),
        "job.discardable": RetryPolicy(discard_on=(Unwanted,)),
    }
    gave_up: list[str] = []
    retried: list[str] = []

    async def job_ok(self, message: dict[str, Any]) -> dict[str, Any]:
        calls.append(("ok", message["attempt"]))
        self.report_progress(1, 2, "half")
        self.report_progress(2, 2, "all")
        return {"echo": message["payload"], "task": self.task.id}

    async def job_flaky(self, message: dict[str, Any]) -> None:
        calls.append(("flaky", message["attempt"]))
        raise Flaky(f"boom {message['attempt']}")

    async def job_give_up(self, message: dict[str, Any]) -> None:
        raise GiveUp("no point")

    async def job_later(self, message: dict[str, Any]) -> None:
        raise RetryLater(123)

    async def job_discardable(self, message: dict[str, Any]) -> None:
        raise Unwanted("not needed")

    async def job_quick(self, message: dict[str, Any]) -> None:
        calls.append(("quick", message["attempt"]))
        await asyncio.sleep(10)

    async def job_chatty(self, message: dict[str, Any]) -> None:
        for i in range(10_000):  # 10,000 reports, with 1,000 chances to flush
            self.report_progress(i + 1, 10_000, f"item {i + 1}")
            if i % 10 == 0:
                await asyncio.sleep(0.001)

    async def job_bad_result(self, message: dict[str, Any]) -> object:
        return object()

    async def on_retry(self, task: TaskRecord, error: BaseException, decision) -> None:
        self.retried.append(str(task.id))

    def on_give_up(self, task: TaskRecord, error: BaseException, decision) -> None:
        self.gave_up.append(str(task.id))
        raise RuntimeError("a broken hook must not matter")


class SyncWorker(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=2, wait=wait_fixed(0), time_limit=0.1)

    def job_slow(self, message: dict[str, Any]) -> str:
        time.sleep(0.3)
        return "too late"

    def job_ok(self, message: dict[str, Any]) -> str:
        self.report_progress(5, 10)
        return "fine"


class LongSyncWorker(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=1, time_limit=10)

    def job_long(self, message: dict[str, Any]) -> str:
        time.sleep(1.2)  # four lease periods of 0.3 s
        return "kept"


class HungSyncWorker(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=1, time_limit=0.1)

    def job_hang(self, message: dict[str, Any]) -> str:
        time.sleep(1.5)  # past its time limit, and its lease of 0.3 s
        return "late"


class SlowWorker(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=1)

    async def job_slow(self, message: dict[str, Any]) -> str:
        await asyncio.sleep(1.0)
        return "slow"


@pytest.fixture(autouse=True)
def _reset(redis_client: Any) -> None:
    calls.clear()
    Consumer.gave_up = []
    Consumer.retried = []


@pytest.fixture
async def worker() -> AsyncIterator[ApplicationCommunicator]:
    comm = ApplicationCommunicator(
        Consumer.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    yield comm
    comm.stop(exceptions=False)


async def make_task(type: str, payload: dict[str, Any] | None = None, **kw: Any):
    task, _ = await store.acreate_task(
        channel=CHANNEL, type=type, payload=payload or {}, ring_timeout=30, **kw
    )
    return task


def ring(task: TaskRecord, attempt: int = 1) -> dict[str, Any]:
    return {"type": task.type, "task_id": str(task.id), "attempt": attempt}


def status_is(task: TaskRecord, *statuses: str) -> Callable[[], TaskRecord | None]:
    def check() -> TaskRecord | None:
        fresh = TaskRecord.objects.get(pk=task.pk)
        return fresh if fresh.status in statuses else None

    return check


def attempt_failed(task: TaskRecord) -> Callable[[], TaskRecord | None]:
    def check() -> TaskRecord | None:
        fresh = TaskRecord.objects.get(pk=task.pk)
        return fresh if fresh.error_class else None

    return check


async def test_success_stores_result_progress_and_attempt(worker) -> None:
    task = await make_task("job.ok", {"n": 1})
    await worker.send_input(ring(task))
    done = await until(status_is(task, Status.SUCCEEDED), what="success")
    assert done.result == {"echo": {"n": 1}, "task": str(task.id)}
    assert (done.attempt, done.max_attempts) == (1, 3)
    assert (done.progress_current, done.progress_total) == (2, 2)
    assert done.progress_message == "all"
    attempts = await database_sync_to_async(list)(done.attempts.all())
    assert [(a.number, a.outcome) for a in attempts] == [(1, "succeeded")]


async def test_duplicate_ring_runs_the_attempt_once(worker) -> None:
    task = await make_task("job.ok")
    for _ in range(3):
        await worker.send_input(ring(task))
    await until(status_is(task, Status.SUCCEEDED))
    await worker.send_input(ring(task))
    # The consumer takes messages in order: once a task rung after all the
    # duplicates has ended, every duplicate has been handled.
    sentinel = await make_task("job.give_up")
    await worker.send_input(ring(sentinel))
    await until(status_is(sentinel, Status.DEAD), what="the sentinel")
    assert calls == [("ok", 1)]


async def test_a_batch_of_rings_runs_each_ring_in_turn(worker) -> None:
    first, second = await make_task("job.ok", {"n": 1}), await make_task("job.ok")
    await worker.send_input(
        {
            "type": doorbell.RINGS_TYPE,
            "rings": [ring(first), ring(first), "not a ring", ring(second)],
        }
    )
    await until(status_is(second, Status.SUCCEEDED), what="the second task")
    await until(status_is(first, Status.SUCCEEDED), what="the first task")
    assert calls == [("ok", 1), ("ok", 1)]  # the duplicate ring found nothing


async def test_failure_is_stored_logged_once_and_scheduled(worker, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="retrying_consumers")
    task = await make_task("job.flaky")
    await worker.send_input(ring(task))
    waiting = await until(status_is(task, Status.RETRYING), what="retrying")
    assert waiting.error_class == "Flaky"
    assert waiting.error_message == "boom 1"
    delay = (waiting.due_at - waiting.updated_at).total_seconds()
    assert 29 <= delay <= 31
    attempt = await database_sync_to_async(AttemptRecord.objects.get)(task=task)
    assert attempt.outcome == "failed"
    assert attempt.decision == "retry"
    assert "raise Flaky" in attempt.traceback
    # The log and the hook follow the write: wait for each one.
    records = await until(
        lambda: [r for r in caplog.records if getattr(r, "outcome", None) == "retry"],
        what="the retry log record",
        in_loop=True,
    )
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert (record.task_id, record.attempt, record.max_attempts) == (str(task.id), 1, 3)
    assert record.error_class == "Flaky"
    assert record.next_attempt_at == waiting.due_at.isoformat()
    await until(lambda: Consumer.retried, what="on_retry", in_loop=True)
    assert Consumer.retried == [str(task.id)]


async def test_last_attempt_ends_dead_with_error_log(worker, caplog) -> None:
    task = await make_task("job.flaky", max_attempts=2)
    await database_sync_to_async(TaskRecord.objects.filter(pk=task.pk).update)(
        attempt=1, status=Status.QUEUED
    )
    await worker.send_input(ring(task, attempt=2))
    dead = await until(status_is(task, Status.DEAD), what="dead")
    assert dead.reason == "attempts exhausted (2 of 2)"
    assert dead.finished_at is not None
    # The log and the hook follow the write: wait for each one.
    errors = await until(
        lambda: [r for r in caplog.records if getattr(r, "outcome", None) == "give_up"],
        what="the give-up log record",
        in_loop=True,
    )
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert errors[0].exc_info[0] is Flaky
    await until(lambda: Consumer.gave_up, what="on_give_up", in_loop=True)
    assert Consumer.gave_up == [str(task.id)]


async def test_give_up_and_discard_and_retry_later(worker) -> None:
    gave_up = await make_task("job.give_up")
    discarded = await make_task("job.discardable")
    later = await make_task("job.later")
    for task in (gave_up, discarded, later):
        await worker.send_input(ring(task))
    assert (await until(status_is(gave_up, Status.DEAD))).reason.startswith("GiveUp")
    cancelled = await until(status_is(discarded, Status.CANCELLED))
    assert cancelled.reason == "discarded (Unwanted)"
    waiting = await until(status_is(later, Status.RETRYING))
    assert 122 <= (waiting.due_at - waiting.updated_at).total_seconds() <= 124


async def test_async_time_limit_cancels_and_retry_is_rung_by_timer(worker) -> None:
    task = await make_task("job.quick")
    await worker.send_input(ring(task))
    waiting = await until(attempt_failed(task))
    assert waiting.error_class == "AttemptTimedOut"
    # wait_fixed(0): the in-process timer rings attempt 2 at once.
    layer = get_channel_layer()
    message = await asyncio.wait_for(layer.receive(CHANNEL), 5)
    assert message == ring(task, attempt=2)
    await worker.send_input(message)
    dead = await until(status_is(task, Status.DEAD))
    outcomes = await database_sync_to_async(
        lambda: list(dead.attempts.values_list("outcome", flat=True))
    )()
    assert outcomes == ["timed_out", "timed_out"]
    assert calls == [("quick", 1), ("quick", 2)]


async def test_unknown_task_and_malformed_ring_keep_the_consumer(
    worker, caplog
) -> None:
    await worker.send_input(
        {
            "type": "job.ok",
            "task_id": "00000000-0000-0000-0000-000000000000",
            "attempt": 1,
        }
    )
    await worker.send_input({"type": "job.ok", "task_id": "not-a-uuid", "attempt": 1})
    await worker.send_input({"type": "job.ok", "task_id": "x", "attempt": "one"})
    task = await make_task("job.ok")
    await worker.send_input(ring(task))
    await until(status_is(task, Status.SUCCEEDED))
    dead_letters = [
        r for r in caplog.records if getattr(r, "outcome", "") == "dead_letter"
    ]
    assert len(dead_letters) == 3


async def test_missing_handler_ends_dead(worker) -> None:
    task = await make_task("job.nothing")
    await worker.send_input(ring(task))
    dead = await until(status_is(task, Status.DEAD))
    assert "no handler for 'job.nothing'" in dead.reason


async def test_unstorable_result_is_dropped_not_fatal(worker) -> None:
    task = await make_task("job.bad_result")
    await worker.send_input(ring(task))
    done = await until(status_is(task, Status.SUCCEEDED))
    assert done.result is None


async def test_cancelled_while_running_keeps_cancelled(worker) -> None:
    task = await make_task("job.quick")
    await worker.send_input(ring(task))
    await until(status_is(task, Status.RUNNING))
    await database_sync_to_async(store.cancel)(task.id)
    # The cancel closes the attempt record; the attempt's own end (a time-out
    # at 0.2 s, or its stop) must not land on the task or the record.
    closed = await until(
        lambda: (
            AttemptRecord.objects.filter(task=task, finished_at__isnull=False)
            .values_list("outcome", flat=True)
            .first()
        ),
        what="the attempt to end",
    )
    assert closed == "cancelled"
    fresh = await database_sync_to_async(store.get_task)(task.id)
    assert fresh.status == Status.CANCELLED


async def test_progress_events_reach_the_task_group(worker) -> None:
    layer = get_channel_layer()
    listener = await layer.new_channel()
    task = await make_task("job.ok")
    await layer.group_add(task_group(task.id), listener)
    await worker.send_input(ring(task))
    seen = []
    while not seen or seen[-1]["status"] != Status.SUCCEEDED:
        event = await asyncio.wait_for(layer.receive(listener), 5)
        assert event["type"] == "task.updates"
        assert {t["id"] for t in event["tasks"]} == {str(task.id)}
        seen += event["tasks"]
    assert seen[0]["status"] == "running"
    assert seen[-1]["progress"] == {"current": 2.0, "total": 2.0, "message": "all"}
    # 2 reports in a row are coalesced into one event.
    assert len(seen) <= 3


async def test_a_chatty_task_is_coalesced_and_its_final_state_delivered(
    worker,
) -> None:
    layer = get_channel_layer()
    listener = await layer.new_channel()
    task = await make_task("job.chatty")
    await layer.group_add(task_group(task.id), listener)
    await worker.send_input(ring(task))
    seen = []
    while not seen or seen[-1]["status"] != Status.SUCCEEDED:
        seen += (await asyncio.wait_for(layer.receive(listener), 10))["tasks"]
    # One event per PROGRESS_INTERVAL (0.1 s) over a run of a second or two, not
    # one per report (10,000) nor one per chance to flush (1,000).
    assert len(seen) < 100
    assert seen[-1]["progress"]["current"] == 10_000
    stored = await database_sync_to_async(store.get_task)(task.id)
    assert stored.progress_current == 10_000
    assert stored.progress_message == "item 10000"


async def test_signals_are_sent(worker) -> None:
    received: list[str] = []

    def on_started(sender, task, attempt, **kw):
        received.append(f"started {attempt}")

    def on_succeeded(sender, task, result, **kw):
        received.append("succeeded")

    signals.task_started.connect(on_started)
    signals.task_succeeded.connect(on_succeeded)
    try:
        task = await make_task("job.ok")
        await worker.send_input(ring(task))
        await until(status_is(task, Status.SUCCEEDED))
        await until(lambda: len(received) == 2)
    finally:
        signals.task_started.disconnect(on_started)
        signals.task_succeeded.disconnect(on_succeeded)
    assert received == ["started 1", "succeeded"]


async def test_sync_consumer_time_limit_is_reported_on_return() -> None:
    comm = ApplicationCommunicator(
        SyncWorker.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    slow = await make_task("job.slow")
    ok = await make_task("job.ok")
    await comm.send_input(ring(slow))
    await comm.send_input(ring(ok))
    failed = await until(attempt_failed(slow))
    assert failed.error_class == "AttemptTimedOut"
    done = await until(status_is(ok, Status.SUCCEEDED))
    assert done.result == "fine"
    assert done.progress_current == 5
    comm.stop(exceptions=False)


async def test_a_long_sync_handler_keeps_its_lease(settings) -> None:
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 0.3}
    comm = ApplicationCommunicator(
        LongSyncWorker.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    task = await make_task("job.long")
    await comm.send_input(ring(task))
    claimed = await until(status_is(task, Status.RUNNING), own_thread=True)
    # Looked at from another thread, since the handler holds Django's shared one:
    # the lease taken at the claim (0.3 s) must be renewed while the handler runs.
    await until(
        lambda: TaskRecord.objects.filter(
            pk=task.pk,
            status=Status.RUNNING,
            lease_expires_at__gte=claimed.lease_expires_at + timedelta(seconds=0.5),
        ).exists(),
        what="the lease to be renewed",
        own_thread=True,
    )
    expired = await sync_to_async(store.expired_lease_ids, thread_sensitive=False)()
    assert expired == []
    assert (
        await sync_to_async(store.get_task, thread_sensitive=False)(task.id)
    ).status == Status.RUNNING
    done = await until(status_is(task, Status.SUCCEEDED), what="success")
    assert done.result == "kept"
    comm.stop(exceptions=False)


async def test_a_sync_handler_hung_past_its_time_limit_loses_its_lease(
    settings,
) -> None:
    # Renewals stop a third of a lease after the time limit: the lease runs
    # out while the thread still runs, and the scheduler may take it back.
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 0.3}
    comm = ApplicationCommunicator(
        HungSyncWorker.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    task = await make_task("job.hang")
    await comm.send_input(ring(task))
    await until(status_is(task, Status.RUNNING), own_thread=True)
    expired = await until(
        lambda: store.expired_lease_ids(),
        what="the lease to run out",
        own_thread=True,
    )
    assert expired == [(task.id, 1)]
    still = await sync_to_async(store.get_task, thread_sensitive=False)(task.id)
    assert still.status == Status.RUNNING  # the handler has not returned yet
    await until(attempt_failed(task), what="the late outcome", own_thread=True)
    comm.stop(exceptions=False)


async def test_a_lease_lost_while_running_is_logged_once(settings, caplog) -> None:
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 0.3}
    comm = ApplicationCommunicator(
        SlowWorker.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    task = await make_task("job.slow")
    with caplog.at_level(logging.INFO, logger="retrying_consumers.consumers"):
        await comm.send_input(ring(task))
        await until(status_is(task, Status.RUNNING))
        await database_sync_to_async(store.cancel)(task.id, reason="by hand")
        await until(status_is(task, Status.CANCELLED))
        await until(
            lambda: "lease lost" in caplog.text, in_loop=True, what="the warning"
        )
        # The renewal that finds the lease gone stops the attempt, unrecorded.
        await until(
            lambda: "attempt stopped" in caplog.text, in_loop=True, what="the stop"
        )
    lost = [r for r in caplog.records if r.getMessage().startswith("lease lost")]
    assert len(lost) == 1
    assert lost[0].task_id == str(task.id)
    assert "not recorded" not in caplog.text
    comm.stop(exceptions=False)


async def test_a_failed_lease_renewal_is_logged_and_the_next_one_tried(
    settings, caplog, monkeypatch
) -> None:
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 0.3}
    renew = store.aextend_lease
    calls: list[int] = []

    async def flaky(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database away")
        return await renew(*args, **kwargs)

    monkeypatch.setattr(store, "aextend_lease", flaky)
    comm = ApplicationCommunicator(
        SlowWorker.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    task = await make_task("job.slow")
    with caplog.at_level(logging.WARNING, logger="retrying_consumers.consumers"):
        await comm.send_input(ring(task))
        done = await until(status_is(task, Status.SUCCEEDED), what="success")
    assert done.result == "slow"
    assert len(calls) >= 2  # renewed again after the failure
    failed = [r for r in caplog.records if "renewal failed" in r.getMessage()]
    assert len(failed) == 1
    assert "lease lost" not in caplog.text
    comm.stop(exceptions=False)


def test_policies_are_validated_when_the_class_is_defined() -> None:
    with pytest.raises(ConfigurationError, match="no handler method 'job_missing'"):

        class Bad(RetryMixin, AsyncConsumer):
            retry_policies = {"job.missing": RetryPolicy()}

    with pytest.raises(ConfigurationError, match="must be a RetryPolicy"):

        class Bad2(RetryMixin, AsyncConsumer):
            retry_policy = {"max_attempts": 3}

    with pytest.raises(ConfigurationError, match="before the Channels consumer"):

        class Bad3(AsyncConsumer, RetryMixin):
            pass


@pytest.mark.parametrize("limit", [0, -1, 2.5, "4", True])
def test_worker_concurrency_must_be_a_positive_int(limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="worker_concurrency must be"):
        type("Bad", (RetryMixin, AsyncConsumer), {"worker_concurrency": limit})
