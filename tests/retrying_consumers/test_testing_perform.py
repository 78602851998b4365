"""retrying_consumers.testing.perform: a task's attempts, run at once in-process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from channels.consumer import AsyncConsumer, SyncConsumer
from tenacity import wait_fixed

from retrying_consumers import (
    GiveUp,
    InvalidPayload,
    RetryMixin,
    RetryPolicy,
    scheduling,
)
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from retrying_consumers.testing import Outcome, aperform, perform

calls: list[int] = []


class Flaky(Exception):
    pass


class Consumer(RetryMixin, AsyncConsumer):
    # An hour between attempts: perform must not wait for it.
    retry_policy = RetryPolicy(max_attempts=4, wait=wait_fixed(3600))
    store_results = True
    retried: list[int] = []

    async def job_flaky(self, message: dict[str, Any]) -> dict[str, Any]:
        calls.append(message["attempt"])
        self.report_progress(message["attempt"], 3, "trying")
        if message["attempt"] < message["payload"]["succeed_at"]:
            raise Flaky(f"attempt {message['attempt']} failed")
        return {"made": message["payload"]["succeed_at"]}

    async def job_hopeless(self, message: dict[str, Any]) -> None:
        raise GiveUp("no such image")

    def on_retry(self, task: TaskRecord, error: BaseException, decision: Any) -> None:
        self.retried.append(task.attempt)


class SyncWork(RetryMixin, SyncConsumer):
    store_results = True

    def job_add(self, message: dict[str, Any]) -> int:
        return int(message["payload"]["a"]) + int(message["payload"]["b"])


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    calls.clear()
    Consumer.retried.clear()


@pytest.mark.django_db(transaction=True)
def test_a_flaky_task_is_retried_at_once_until_it_succeeds() -> None:
    outcome = perform(Consumer, "job.flaky", {"succeed_at": 3})
    assert outcome == Outcome(
        task_id=outcome.task_id,
        status=Status.SUCCEEDED,
        attempts=3,
        result={"made": 3},
        error_class="Flaky",
        error_message="attempt 2 failed",
        reason="",
    )
    assert outcome.succeeded
    assert calls == [1, 2, 3]
    assert Consumer.retried == [1, 2]
    numbers = AttemptRecord.objects.filter(task_id=outcome.task_id)
    assert sorted(numbers.values_list("number", "outcome")) == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]


@pytest.mark.django_db(transaction=True)
def test_max_attempts_caps_the_attempts_and_the_task_ends_dead() -> None:
    outcome = perform(Consumer, "job.flaky", {"succeed_at": 9}, max_attempts=2)
    assert (outcome.status, outcome.attempts) == (Status.DEAD, 2)
    assert (outcome.error_class, outcome.error_message) == (
        "Flaky",
        "attempt 2 failed",
    )
    assert outcome.reason
    assert not outcome.succeeded
    assert calls == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_the_policys_own_limit_applies_without_max_attempts() -> None:
    outcome = perform(Consumer, "job.flaky", {"succeed_at": 9})
    assert (outcome.status, outcome.attempts) == (Status.DEAD, 4)


@pytest.mark.django_db(transaction=True)
def test_give_up_ends_dead_after_one_attempt() -> None:
    outcome = perform(Consumer, "job.hopeless")
    assert (outcome.status, outcome.attempts, outcome.error_class) == (
        Status.DEAD,
        1,
        "GiveUp",
    )


@pytest.mark.django_db(transaction=True)
def test_a_sync_consumer_runs_too() -> None:
    outcome = perform(SyncWork, "job.add", {"a": 2, "b": 3}, channel="sums")
    assert (outcome.status, outcome.result) == (Status.SUCCEEDED, 5)
    assert TaskRecord.objects.get(pk=outcome.task_id).channel == "sums"


@pytest.mark.django_db(transaction=True)
def test_the_task_belongs_to_the_user(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("ann")
    outcome = perform(SyncWork, "job.add", {"a": 1, "b": 1}, user=user)
    assert TaskRecord.objects.get(pk=outcome.task_id).owner_id == user.pk


@pytest.mark.django_db(transaction=True)
def test_bad_input_is_refused_as_enqueue_refuses_it() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\['when'\]"):
        perform(SyncWork, "job.add", {"when": object()})
    assert not TaskRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_no_channel_layer_is_reached(settings: Any, caplog: Any) -> None:
    # Nothing listens on port 9: a ring or an event sent there would fail.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:9/0"]},
        }
    }
    outcome = perform(Consumer, "job.flaky", {"succeed_at": 2})
    assert (outcome.status, outcome.attempts) == (Status.SUCCEEDED, 2)
    # The layer's failures would be logged (events and rings never raise).
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.django_db
def test_a_test_in_a_transaction_is_told_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"transaction=True"):
        perform(SyncWork, "job.add", {"a": 1, "b": 1})


@pytest.mark.django_db(transaction=True)
async def test_aperform_runs_in_the_event_loop_and_stores_progress() -> None:
    outcome = await aperform(Consumer, "job.flaky", {"succeed_at": 2})
    assert (outcome.status, outcome.attempts) == (Status.SUCCEEDED, 2)
    task = await TaskRecord.objects.aget(pk=outcome.task_id)
    assert (task.progress_current, task.progress_total) == (2, 3)


@pytest.mark.django_db(transaction=True)
async def test_no_retry_timer_is_left_behind(monkeypatch: Any) -> None:
    timers: list[Any] = []
    loop = asyncio.get_running_loop()
    set_timer = loop.call_later

    def call_later(delay: float, callback: Any, *args: Any, **kw: Any) -> Any:
        if callback is scheduling._start:  # a retry's ring timer
            timers.append(args)
        return set_timer(delay, callback, *args, **kw)

    # schedule_ring sets its timer while the failure is announced, inside
    # aperform: the timers are known once it returns, with nothing to wait for.
    monkeypatch.setattr(loop, "call_later", call_later)
    Consumer.retry_policy = RetryPolicy(max_attempts=4, wait=wait_fixed(0))
    try:
        outcome = await aperform(Consumer, "job.flaky", {"succeed_at": 3})
    finally:
        Consumer.retry_policy = RetryPolicy(max_attempts=4, wait=wait_fixed(3600))
    assert (outcome.attempts, timers) == (3, [])
