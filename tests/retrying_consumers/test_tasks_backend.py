"""ChannelsBackend and DjangoTaskConsumer: Django's task API on the retry layer.

Attempts run in a DjangoTaskConsumer driven in this process, fed with the rings
that the real channels-redis layer carries; the store is the test database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from django.db import transaction
from django.tasks import (
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
)
from django.tasks.exceptions import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from tenacity import wait_fixed

from retrying_consumers import RetryMixin, producer, signals, store
from retrying_consumers.conf import worker_id
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from retrying_consumers.policy import RetryPolicy
from retrying_consumers.scheduling import aring_due
from retrying_consumers.tasks_backend import (
    ChannelsBackend,
    ChannelsTask,
    InvalidTaskData,
    exception_path,
)
from retrying_consumers.tasks_consumer import DjangoTaskConsumer, django_task_routes
from tests import django_tasks_defs as defs

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "retrying_consumers.tasks_backend.ChannelsBackend"
QUEUE = "default"
TWO_BACKENDS = {
    "default": {"BACKEND": BACKEND, "QUEUES": ["default", "emails"]},
    "other": {
        "BACKEND": BACKEND,
        "QUEUES": ["default"],
        "OPTIONS": {"MAX_ATTEMPTS": 7},
    },
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
}


class SlowConsumer(DjangoTaskConsumer):
    retry_policy = RetryPolicy(max_attempts=1, time_limit=0.1, wait=wait_fixed(0))


@pytest.fixture(autouse=True)
def _clean(redis_client: Any) -> None:
    defs.backoff_calls.clear()


@pytest.fixture
def sent() -> Iterator[list[tuple[str, type, str, str]]]:
    """Django's task signals as received: (name, sender, status, result id)."""
    seen: list[tuple[str, type, str, str]] = []
    receivers = {}
    for name, signal in [
        ("enqueued", task_enqueued),
        ("started", task_started),
        ("finished", task_finished),
    ]:

        def receiver(sender: type, task_result: Any, _name: str = name, **kw: Any):
            seen.append((_name, sender, task_result.status, task_result.id))

        receivers[signal] = receiver
        signal.connect(receiver, weak=False)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


async def consumer(cls: type = DjangoTaskConsumer) -> ApplicationCommunicator:
    return ApplicationCommunicator(cls.as_asgi(), {"type": "channel", "channel": QUEUE})


@pytest.fixture
async def worker() -> AsyncIterator[ApplicationCommunicator]:
    comm = await consumer()
    yield comm
    comm.stop(exceptions=False)


async def next_ring(channel: str = QUEUE) -> dict[str, Any]:
    return await asyncio.wait_for(get_channel_layer().receive(channel), 5)


async def run_next(worker: ApplicationCommunicator) -> dict[str, Any]:
    """Feed the next ring of the queue (the enqueue's or a retry's) to ``worker``."""
    message = await next_ring()
    await worker.send_input(message)
    return message


async def until(result: Any, check: Callable[[Any], bool], what: str) -> Any:
    """Poll the stored result until ``check`` holds; fail after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        fresh = await default_task_backend.aget_result(result.id)
        if check(fresh):
            return fresh
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {fresh}")
        await asyncio.sleep(0.02)


async def until_sent(sent: list[Any], name: str) -> None:
    """Wait for signal ``name``: it follows the stored outcome by a moment."""
    deadline = time.monotonic() + 10
    while not any(item[0] == name for item in sent):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for signal {name}: {sent}")
        await asyncio.sleep(0.02)


def finished(result: Any) -> bool:
    return bool(result.is_finished)


def record(result: Any) -> TaskRecord:
    return TaskRecord.objects.get(pk=result.id)


def test_capabilities_are_what_channels_can_do() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, ChannelsBackend)
    assert (backend.supports_defer, backend.supports_async_task) == (True, True)
    assert backend.supports_get_result is True
    assert backend.supports_priority is False
    assert isinstance(defs.flaky, ChannelsTask)
    assert (defs.flaky.max_attempts, defs.flaky.backoff) == (3, defs.quick_backoff)


def test_enqueue_stores_the_task_and_rings_its_queue(sent: list[Any]) -> None:
    result = defs.echo.enqueue(1, (2, 3), name="x")
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs) == ([1, [2, 3]], {"name": "x"})
    assert (result.task, result.backend) == (defs.echo, "default")
    assert result.enqueued_at is not None
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (
        None,
        None,
        None,
    )
    assert (result.errors, result.worker_ids, result.attempts) == ([], [], 0)
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    stored = record(result)
    assert (stored.channel, stored.type, stored.status) == (
        QUEUE,
        "django.task.tests.django_tasks_defs.echo",
        "queued",
    )
    assert stored.payload["module_path"] == "tests.django_tasks_defs.echo"
    ring = async_to_sync(next_ring)()
    assert ring == {
        "type": "django.task.tests.django_tasks_defs.echo",
        "task_id": result.id,
        "attempt": 1,
    }
    assert sent == [("enqueued", ChannelsBackend, "READY", result.id)]
    assert default_task_backend.get_result(result.id) == result
    assert defs.echo.get_result(result.id) == result
    with pytest.raises(TaskResultMismatch):
        defs.add.get_result(result.id)


def finish_when_rung(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each ring run its task's attempt to success at once, as a fast
    worker would before ``enqueue`` returns."""
    ring, aring = producer.ring, producer.aring

    def run(task_id: Any) -> None:
        assert store.claim(
            task_id, 1, worker="w:1", lease_seconds=30, default_max_attempts=3
        )
        store.succeed(task_id, 1, worker="w:1", result=5)

    def ring_and_run(task: TaskRecord) -> None:
        ring(task)
        run(task.id)

    async def aring_and_run(task: TaskRecord) -> bool:
        sent = await aring(task)
        await database_sync_to_async(run)(task.id)
        return sent

    monkeypatch.setattr(producer, "ring", ring_and_run)
    monkeypatch.setattr(producer, "aring", aring_and_run)


def assert_as_enqueued(result: Any) -> None:
    assert (result.status, result.attempts) == (TaskResultStatus.READY, 0)
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (
        None,
        None,
        None,
    )
    assert (result.errors, result.worker_ids) == ([], [])
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018


def test_enqueue_returns_the_task_as_enqueued_however_fast_it_runs(
    sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_when_rung(monkeypatch)
    result = defs.add.enqueue(2, 3)
    assert_as_enqueued(result)
    assert sent == [("enqueued", ChannelsBackend, "READY", result.id)]
    assert default_task_backend.get_result(result.id).status == "SUCCESSFUL"
    assert result.enqueued_at == record(result).created_at


async def test_aenqueue_returns_the_task_as_enqueued_however_fast_it_runs(
    sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_when_rung(monkeypatch)
    result = await defs.add.aenqueue(2, 3)
    assert_as_enqueued(result)
    assert sent == [("enqueued", ChannelsBackend, "READY", result.id)]
    done = await default_task_backend.aget_result(result.id)
    assert (done.status, done.return_value) == ("SUCCESSFUL", 5)
    assert result.enqueued_at == done.enqueued_at


async def test_aenqueue_and_aget_result(sent: list[Any]) -> None:
    result = await defs.add.aenqueue(2, b=3)
    assert (result.status, result.args, result.kwargs) == ("READY", [2], {"b": 3})
    assert await next_ring() == {
        "type": "django.task.tests.django_tasks_defs.add",
        "task_id": result.id,
        "attempt": 1,
    }
    assert await defs.add.aget_result(result.id) == result
    assert sent == [("enqueued", ChannelsBackend, "READY", result.id)]


def test_unknown_ids_do_not_exist() -> None:
    other = producer.enqueue(QUEUE, "thumbnail.generate", {})
    for result_id in ["123", "6f414ab0-79ec-476b-ba93-74eeb45262fc", str(other)]:
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


async def test_success_maps_to_successful_with_signals(worker, sent) -> None:
    result = await defs.add.aenqueue(2, 3)
    await run_next(worker)
    done = await until(result, finished, "success")
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert (done.attempts, done.worker_ids, done.errors) == (1, [worker_id()], [])
    assert done.started_at <= done.last_attempted_at <= done.finished_at
    await result.arefresh()
    assert (result.status, result.return_value) == ("SUCCESSFUL", 5)
    await until_sent(sent, "finished")
    assert sent == [
        ("enqueued", ChannelsBackend, "READY", result.id),
        ("started", ChannelsBackend, "RUNNING", result.id),
        ("finished", ChannelsBackend, "SUCCESSFUL", result.id),
    ]


class QuickConsumer(DjangoTaskConsumer):
    retry_policy = RetryPolicy(max_attempts=1)


async def test_a_subclass_announces_django_task_finished(sent) -> None:
    worker = await consumer(QuickConsumer)
    try:
        result = await defs.add.aenqueue(1, 1)
        await run_next(worker)
        await until(result, finished, "success")
        await until_sent(sent, "finished")
    finally:
        worker.stop(exceptions=False)
    assert sent[-1] == ("finished", ChannelsBackend, "SUCCESSFUL", result.id)


def test_other_consumers_outcomes_run_no_task_finished_receiver() -> None:
    class Plain(RetryMixin, AsyncConsumer):
        pass

    final = (signals.task_succeeded, signals.task_dead, signals.task_discarded)
    # (task_dead has the library's dead-task mail for every sender.)
    assert not signals.task_succeeded.has_listeners(Plain)
    assert not signals.task_discarded.has_listeners(Plain)
    assert all(signal.has_listeners(QuickConsumer) for signal in final)
    # The scheduler's lost-worker outcomes, when no consumer is known.
    assert all(signal.has_listeners(object) for signal in final)


async def test_a_running_task_sees_itself_running(worker) -> None:
    result = await defs.introspect.aenqueue()
    await run_next(worker)
    done = await until(result, finished, "introspect to finish")
    assert done.return_value == {
        "attempt": 1,
        "status": "RUNNING",
        "stored_status": "RUNNING",
        "worker_ids": [worker_id()],
    }


async def test_retry_after_the_task_backoff_then_success(worker) -> None:
    result = await defs.flaky.aenqueue(1, "v")
    await run_next(worker)
    waiting = await until(result, lambda r: r.errors, "attempt 1 to fail")
    assert (waiting.status, waiting.attempts) == (TaskResultStatus.READY, 1)
    assert waiting.errors[0].exception_class is defs.Boom
    assert "Boom: attempt 1" in waiting.errors[0].traceback
    first = await AttemptRecord.objects.aget(task_id=result.id, number=1)
    assert first.next_attempt_at - first.finished_at == timedelta(seconds=0.1)
    assert (await TaskRecord.objects.aget(pk=result.id)).reason == "backoff() 0.1 s"
    await run_next(worker)  # rung by the retry's timer
    done = await until(result, finished, "attempt 2")
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"value": "v", "attempt": 2}
    assert (done.attempts, len(done.errors)) == (2, 1)
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert (stored.progress_current, stored.progress_message) == (1, "done")


async def test_dead_task_is_failed_with_every_attempts_error(worker, sent) -> None:
    result = await defs.doomed.aenqueue()
    await run_next(worker)
    await run_next(worker)
    dead = await until(result, finished, "doomed to end")
    assert dead.status == TaskResultStatus.FAILED
    assert dead.attempts == 2
    assert [e.exception_class for e in dead.errors] == [defs.Boom, defs.Boom]
    assert all("Boom: always" in e.traceback for e in dead.errors)
    assert dead.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        dead.return_value  # noqa: B018
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert (stored.status, stored.reason) == ("dead", "attempts exhausted (2 of 2)")
    await until_sent(sent, "finished")
    assert [(n, status) for n, _, status, _ in sent if n != "started"] == [
        ("enqueued", "READY"),
        ("finished", "FAILED"),
    ]


async def test_backoff_receives_the_exception_and_the_failed_result(worker) -> None:
    result = await defs.recorded.aenqueue()
    await run_next(worker)
    await until(result, lambda r: r.errors, "attempt 1 to fail")
    [(error, failed)] = defs.backoff_calls
    assert isinstance(error, defs.Boom)
    assert (failed.id, failed.status, failed.attempts) == (result.id, "FAILED", 1)
    assert failed.errors[0].exception_class_path == "tests.django_tasks_defs.Boom"
    assert failed.finished_at is not None


async def test_backoff_receives_the_server_retry_after(worker) -> None:
    defs.retry_after_calls.clear()
    result = await defs.throttled.aenqueue("30")
    await run_next(worker)
    await until(result, lambda r: r.errors, "attempt 1 to fail")
    assert defs.retry_after_calls == [30.0]
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert stored.reason == "backoff() 60 s"


async def test_retry_after_is_none_without_a_hint(worker) -> None:
    defs.retry_after_calls.clear()
    result = await defs.throttled.aenqueue("soon, maybe")
    await run_next(worker)
    await until(result, lambda r: r.errors, "attempt 1 to fail")
    assert defs.retry_after_calls == [None]


async def test_a_two_argument_backoff_still_works_with_a_hint(worker) -> None:
    result = await defs.throttled_two_argument_backoff.aenqueue()
    await run_next(worker)
    await until(result, lambda r: r.errors, "attempt 1 to fail")
    [(error, _)] = defs.backoff_calls
    assert isinstance(error, defs.Throttled)
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert stored.reason == "backoff() 0.1 s"


def test_backoff_returning_none_gives_up(settings: Any) -> None:
    # Eager mode runs the task at enqueue, through the same consumer and policy.
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"EAGER": True}}}
    dead = defs.once.enqueue()
    assert (dead.status, dead.attempts) == (TaskResultStatus.FAILED, 1)
    assert record(dead).reason == "backoff() returned None"


async def test_a_broken_backoff_is_logged_and_the_policy_decides(
    worker, caplog
) -> None:
    result = await defs.badly_backed_off.aenqueue()
    await run_next(worker)
    waiting = await until(result, lambda r: r.errors, "attempt 1 to fail")
    assert waiting.status == TaskResultStatus.READY
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert stored.reason == "backoff"  # the policy's own wait: 10 s or more
    assert (stored.due_at - stored.updated_at).total_seconds() >= 10
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [(r.name, r.task_id) for r in critical] == [
        ("retrying_consumers.consumers", result.id)
    ]
    assert "backoff() must return seconds" in str(critical[0].exc_info[1])


async def test_retry_later_keeps_its_delay(worker) -> None:
    result = await defs.later.aenqueue()
    await run_next(worker)
    await until(result, lambda r: r.errors, "attempt 1 to fail")
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert stored.reason == "RetryLater 600 s"
    assert defs.backoff_calls == []


async def test_a_return_value_json_cannot_carry_ends_the_task(worker) -> None:
    result = await defs.returns_object.aenqueue()
    await run_next(worker)
    dead = await until(result, finished, "the task to end")
    assert (dead.status, dead.attempts) == (TaskResultStatus.FAILED, 1)
    assert dead.errors[0].exception_class is InvalidTaskData


async def test_context_progress_from_an_async_task(worker) -> None:
    result = await defs.async_progress.aenqueue(3)
    await run_next(worker)
    done = await until(result, finished, "progress task")
    assert done.return_value == 3
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert (stored.progress_current, stored.progress_total) == (3, 3)
    assert stored.progress_message == "step 3"


async def test_a_sync_task_past_its_time_limit_ends_when_it_returns() -> None:
    worker = await consumer(SlowConsumer)
    try:
        result = await defs.sleeper.aenqueue(0.3)
        await run_next(worker)
        dead = await until(result, finished, "the slow task to end")
    finally:
        worker.stop(exceptions=False)
    assert dead.errors[0].exception_class_path.endswith("AttemptTimedOut")
    attempt = await AttemptRecord.objects.aget(task_id=result.id)
    assert attempt.outcome == "timed_out"
    assert (attempt.finished_at - attempt.started_at).total_seconds() >= 0.3


async def test_a_sync_task_leaves_the_database_thread_free(worker) -> None:
    # Leases are renewed through the worker's one database thread; a sync task
    # holding that thread would let them expire while it runs.
    defs.release.clear()
    result = await defs.blocker.aenqueue()
    await run_next(worker)
    await until(result, lambda r: r.status == "RUNNING", "the task to run")
    defs.release.set()
    done = await until(result, finished, "the task to end")
    assert done.return_value is True


async def test_deferred_task_is_rung_by_the_scheduler_once_due(
    redis_client: Any,
) -> None:
    run_after = timezone.now() + timedelta(hours=1)
    result = await defs.echo.using(run_after=run_after).aenqueue("later")
    assert redis_client.zcard(get_channel_layer().prefix + QUEUE) == 0
    assert (result.status, result.task.run_after) == ("READY", run_after)
    stored = await TaskRecord.objects.aget(pk=result.id)
    assert (stored.status, stored.due_at) == ("queued", run_after)
    assert await aring_due() == 0
    assert (await default_task_backend.aget_result(result.id)).task == result.task
    await TaskRecord.objects.filter(pk=result.id).aupdate(
        due_at=timezone.now() - timedelta(seconds=1)
    )
    assert await aring_due() == 1
    assert (await next_ring())["task_id"] == result.id


def test_run_after_in_the_past_rings_at_once(redis_client: Any) -> None:
    result = defs.echo.using(run_after=timezone.now() - timedelta(hours=1)).enqueue()
    assert async_to_sync(next_ring)()["task_id"] == result.id


def test_producer_run_after(redis_client: Any) -> None:
    later = timezone.now() + timedelta(minutes=5)
    task_id = producer.enqueue(QUEUE, "job.run", {}, run_after=later)
    assert TaskRecord.objects.get(pk=task_id).due_at == later
    assert redis_client.zcard(get_channel_layer().prefix + QUEUE) == 0
    with pytest.raises(ValueError, match="aware datetime"):
        producer.enqueue(QUEUE, "job.run", {}, run_after=datetime(2030, 1, 1))
    assert TaskRecord.objects.count() == 1


def test_priority_is_refused_honestly() -> None:
    with pytest.raises(InvalidTask, match="priority"):
        defs.echo.using(priority=10)
    with pytest.raises(InvalidTask, match="priority"):
        task(priority=5)(defs.quick_backoff)


def test_using_another_queue_and_another_backend(settings: Any) -> None:
    settings.TASKS = TWO_BACKENDS
    emails = defs.echo.using(queue_name="emails").enqueue()
    assert record(emails).channel == "emails"
    assert default_task_backend.get_result(emails.id).task.queue_name == "emails"
    other = defs.echo.using(backend="other").enqueue()
    assert (other.backend, record(other).max_attempts) == ("other", 7)
    assert task_backends["other"].get_result(other.id) == other
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(other.id)
    with pytest.raises(InvalidTask, match="not valid for backend"):
        defs.echo.using(queue_name="nope")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"QUEUES": ["ok", "not a channel"]}, "'not a channel' are not channel names"),
        ({"OPTIONS": {"RETRIES": 3}}, "may only have MAX_ATTEMPTS, BACKOFF"),
        (
            {"OPTIONS": {"MAX_ATTEMPTS": 0}},
            r"\['MAX_ATTEMPTS'\] must be an int from 1 to 1000000",
        ),
        ({"OPTIONS": {"MAX_ATTEMPTS": True}}, "must be an int from 1 to 1000000"),
        ({"OPTIONS": {"BACKOFF": 30}}, r"\['BACKOFF'\] must be a callable"),
        ({"OPTIONS": {"BACKOFF": "no.such.backoff"}}, "BACKOFF"),
    ],
)
def test_bad_backend_configuration(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidTaskBackend, match=problem):
        ChannelsBackend("x", {"BACKEND": BACKEND, **params})


def test_empty_queues_mean_any_channel_name(settings: Any, redis_client: Any) -> None:
    # As Django documents QUEUES: empty means no validation of queue names.
    settings.TASKS = {"default": {"BACKEND": BACKEND, "QUEUES": []}}
    result = defs.echo.using(queue_name="any-queue.1").enqueue()
    assert record(result).channel == "any-queue.1"
    assert default_task_backend.get_result(result.id).task.queue_name == "any-queue.1"
    assert async_to_sync(next_ring)("any-queue.1")["task_id"] == result.id
    # Still a channel name, or it could never be rung.
    with pytest.raises(InvalidTask, match="'not a channel' is not a channel name"):
        defs.echo.using(queue_name="not a channel")
    assert TaskRecord.objects.count() == 1


def test_backend_options_give_defaults(settings: Any) -> None:
    path = "tests.django_tasks_defs.quick_backoff"
    options = {"MAX_ATTEMPTS": 4, "BACKOFF": path}
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
    assert default_task_backend.backoff is defs.quick_backoff
    assert record(defs.echo.enqueue()).max_attempts == 4
    assert record(defs.flaky.enqueue(0, 1)).max_attempts == 3  # the task's own


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"max_attempts": 0}, "max_attempts must be an int from 1 to"),
        ({"max_attempts": "3"}, "max_attempts must be an int from 1 to"),
        ({"max_attempts": True}, "max_attempts must be an int from 1 to"),
        ({"backoff": 30}, "backoff must be a callable"),
        ({"run_after": datetime(2030, 1, 1)}, "aware datetime"),
        ({"queue_name": "emails"}, "not valid for backend"),
        ({"takes_context": True}, "first argument of 'context'"),
    ],
)
def test_bad_task_options(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidTask, match=problem):
        replace(defs.echo, **changes)


def test_bad_task_definitions() -> None:
    def local() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(local)
    with pytest.raises(TypeError, match="max_attempt"):
        task(max_attempt=3)(defs.quick_backoff)
    with pytest.raises(InvalidTask, match="must be the Task itself"):
        ChannelsTask(func=defs.quick_backoff).enqueue()
    assert not TaskRecord.objects.exists()


def test_arguments_json_cannot_carry_fail_at_enqueue() -> None:
    with pytest.raises(TypeError, match=r"task\['args'\]\[1\]: datetime"):
        defs.echo.enqueue(1, datetime.now(UTC))
    with pytest.raises(InvalidTaskData, match=r"task\['kwargs'\]\['keys'\]\[3\]"):
        defs.echo.enqueue(keys={3: "three"})
    assert not TaskRecord.objects.exists()


def test_enqueue_on_commit_as_django_documents(redis_client: Any) -> None:
    with transaction.atomic():
        transaction.on_commit(partial(defs.echo.enqueue, 7))
        assert not TaskRecord.objects.exists()
    [stored] = TaskRecord.objects.all()
    assert stored.payload["args"] == [7]
    assert async_to_sync(next_ring)()["task_id"] == str(stored.id)
    with pytest.raises(RuntimeError), transaction.atomic():
        transaction.on_commit(partial(defs.echo.enqueue, 8))
        raise RuntimeError("rolled back")
    assert TaskRecord.objects.count() == 1


def test_cancel_and_retry_now_work_on_django_tasks() -> None:
    result = defs.echo.enqueue()
    producer.cancel(result.id)
    cancelled = default_task_backend.get_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.finished_at is not None
    producer.retry_now(result.id)
    assert default_task_backend.get_result(result.id).status == "READY"


def test_routes_cover_every_queue_of_every_channels_backend(settings: Any) -> None:
    settings.TASKS = TWO_BACKENDS
    assert sorted(django_task_routes()) == ["default", "emails"]


def test_the_project_routes_its_default_queue() -> None:
    from project.routing import CHANNEL_ROUTES

    assert CHANNEL_ROUTES["default"].consumer_class is DjangoTaskConsumer


@pytest.mark.parametrize(
    ("name", "traceback", "path"),
    [
        ("ValueError", "Traceback ...\nValueError: bad\n", "builtins.ValueError"),
        ("Boom", "Traceback ...\npkg.mod.Boom: x\ny\n", "pkg.mod.Boom"),
        ("Outer.Err", "Traceback ...\npkg.Outer.Err\n", "pkg.Outer.Err"),
        ("WorkerLost", "", "retrying_consumers.exceptions.WorkerLost"),
        ("Unheard", "", "Unheard"),
    ],
)
def test_exception_path(name: str, traceback: str, path: str) -> None:
    assert exception_path(name, traceback) == path


async def test_a_lost_worker_shows_as_an_error() -> None:
    result = await defs.echo.aenqueue()
    stored = await TaskRecord.objects.aget(pk=result.id)
    await database_sync_to_async(AttemptRecord.objects.create)(
        task=stored,
        number=1,
        worker="gone:1",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        outcome="worker_lost",
        error_class="WorkerLost",
        error_message="worker gone:1 stopped renewing its lease (worker lost)",
    )
    await TaskRecord.objects.filter(pk=result.id).aupdate(
        attempt=1, status=Status.RETRYING
    )
    waiting = await default_task_backend.aget_result(result.id)
    assert (waiting.status, waiting.worker_ids) == ("READY", ["gone:1"])
    [error] = waiting.errors
    assert error.exception_class_path == "retrying_consumers.exceptions.WorkerLost"
    assert "stopped renewing its lease" in error.traceback


async def test_system_exit_from_a_sync_task_is_a_failed_attempt(worker) -> None:
    # Django's ImmediateBackend records it as a failure; so does the worker,
    # and its event loop runs on.
    result = await defs.exits.aenqueue()
    await run_next(worker)
    dead = await until(result, finished, "the task to end")
    assert dead.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in dead.errors] == [SystemExit]
    follow = await defs.add.aenqueue(2, 3)
    await run_next(worker)
    done = await until(follow, finished, "the next task to end")
    assert done.return_value == 5


async def test_a_return_value_past_the_payload_limit_ends_the_task(
    worker, settings: Any
) -> None:
    settings.RETRYING_CONSUMERS = {"MAX_PAYLOAD_BYTES": 1000}
    result = await defs.huge.aenqueue(2000)
    await run_next(worker)
    dead = await until(result, finished, "the task to end")
    assert (dead.status, dead.attempts) == (TaskResultStatus.FAILED, 1)
    assert dead.errors[0].exception_class is InvalidTaskData
    assert "MAX_PAYLOAD_BYTES" in dead.errors[0].traceback
