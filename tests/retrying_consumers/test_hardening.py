"""Every failure ends in a recorded outcome: message types that name the
machinery, poisoned contexts, BaseExceptions, interruptions, recovery by the
task's own consumer, store outages and receive errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import ChannelNameRouter
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.db import OperationalError
from django.utils import timezone
from tenacity import retry_if_exception_type, wait_fixed

from retrying_consumers import (
    RetryingAsyncJsonWebsocketConsumer,
    RetryMixin,
    RetryPolicy,
    store,
)
from retrying_consumers import worker as worker_module
from retrying_consumers.exceptions import ConfigurationError
from retrying_consumers.health import StoreHealth
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from retrying_consumers.worker import RetryingWorker
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "hardening"
ran: list[str] = []
hooks: list[str] = []


class Custom(BaseException):
    pass


class Consumer(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=3, wait=wait_fixed(30))
    retry_policies = {
        "job.any": RetryPolicy(
            max_attempts=3,
            wait=wait_fixed(30),
            retry=retry_if_exception_type(BaseException),
        ),
    }

    async def job_ok(self, message: dict[str, Any]) -> str:
        ran.append("ok")
        return await database_sync_to_async(lambda: "db fine")()

    async def job_poison_context(self, message: dict[str, Any]) -> None:
        # What a RecursionError inside sync_to_async leaves behind.
        SyncToAsync.deadlock_context.set(True)
        raise RecursionError("maximum recursion depth exceeded")

    async def job_exit(self, message: dict[str, Any]) -> None:
        raise SystemExit(1)

    async def job_interrupt(self, message: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    async def job_custom(self, message: dict[str, Any]) -> None:
        raise Custom("odd")

    async def job_cancelled(self, message: dict[str, Any]) -> None:
        raise asyncio.CancelledError  # raised, not a cancellation of the task

    async def job_any(self, message: dict[str, Any]) -> None:
        raise SystemExit(2)

    async def job_huge(self, message: dict[str, Any]) -> str:
        return "x" * 2000

    async def job_block(self, message: dict[str, Any]) -> None:
        ran.append("block")
        await asyncio.sleep(3600)

    def on_retry(self, task: TaskRecord, error: BaseException, decision: Any) -> None:
        hooks.append(f"retry {type(error).__name__}")
        raise SystemExit("a hook's SystemExit stops nothing")


class SyncExit(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=1)

    def job_exit(self, message: dict[str, Any]) -> None:
        raise SystemExit(1)


@pytest.fixture(autouse=True)
def _reset(redis_client: Any) -> None:
    ran.clear()
    hooks.clear()


@pytest.fixture
async def consumer() -> AsyncIterator[ApplicationCommunicator]:
    comm = ApplicationCommunicator(
        Consumer.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    yield comm
    comm.stop(exceptions=False)


async def make_task(type: str, channel: str = CHANNEL, **kw: Any) -> TaskRecord:
    task, _ = await store.acreate_task(
        channel=channel, type=type, payload={}, ring_timeout=30, **kw
    )
    return task


def ring(task: TaskRecord, attempt: int = 1) -> dict[str, Any]:
    return {"type": task.type, "task_id": str(task.id), "attempt": attempt}


def ended(task: TaskRecord, *statuses: str) -> Callable[[], TaskRecord | None]:
    def check() -> TaskRecord | None:
        fresh = TaskRecord.objects.get(pk=task.pk)
        return fresh if fresh.status in statuses else None

    return check


# Message types reach only the user's handlers -----------------------------------

MACHINERY = ["dispatch", "decide_retry", "on_retry", "send", "_private", "task"]


@pytest.mark.parametrize("kind", MACHINERY)
async def test_a_task_whose_type_names_machinery_ends_dead_without_running(
    consumer: ApplicationCommunicator, kind: str
) -> None:
    task = await make_task(kind)
    await consumer.send_input(ring(task))
    dead = await until(ended(task, Status.DEAD), what="the task to end dead")
    assert (dead.attempt, dead.error_class) == (1, "NoHandler")
    assert hooks == []  # dead at once: neither decide_retry nor on_retry ran
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the next task")


async def test_a_plain_message_naming_machinery_is_dead_lettered(
    consumer: ApplicationCommunicator, caplog: pytest.LogCaptureFixture
) -> None:
    await consumer.send_input({"type": "dispatch"})
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the next task")
    [record] = [r for r in caplog.records if getattr(r, "outcome", "") == "dead_letter"]
    assert "no handler" in record.getMessage() and "'dispatch'" in record.getMessage()


async def test_a_ring_on_another_channel_does_not_run_the_task(
    consumer: ApplicationCommunicator,
) -> None:
    stray = await make_task("decide_retry", channel="hardening-elsewhere")
    await consumer.send_input(ring(stray))
    # The consumer takes messages in order: once a later task has ended, the
    # stray ring has been handled, and it changed nothing.
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the next task")
    untouched = await store.aget_task(stray.id)
    assert (untouched.status, untouched.attempt) == (Status.QUEUED, 0)


def test_a_policy_for_a_machinery_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no handler method 'dispatch'"):

        class Bad(RetryMixin, AsyncConsumer):
            retry_policies = {"dispatch": RetryPolicy()}


class Socket(RetryingAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add("hardening-socket", self.channel_name)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content})


async def test_a_websocket_gets_an_error_frame_for_machinery_and_stays_usable() -> None:
    comm = WebsocketCommunicator(Socket.as_asgi(), "/ws/")
    connected, _ = await comm.connect()
    assert connected
    try:
        layer = get_channel_layer()
        for kind in ("dispatch", "close", "websocket.send"):
            await layer.group_send("hardening-socket", {"type": kind, "code": 4000})
            frame = await comm.receive_json_from(timeout=5)
            assert (frame["type"], frame["code"]) == ("error", "no_handler")
        await comm.send_json_to({"n": 1})
        assert await comm.receive_json_from(timeout=5) == {"echo": {"n": 1}}
    finally:
        await comm.disconnect()


async def test_a_result_past_the_payload_limit_is_not_stored(
    consumer: ApplicationCommunicator,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.RETRYING_CONSUMERS = {"MAX_PAYLOAD_BYTES": 1000}
    task = await make_task("job.huge")
    await consumer.send_input(ring(task))
    done = await until(ended(task, Status.SUCCEEDED), what="the task to end")
    assert done.result is None
    [record] = [r for r in caplog.records if "result not stored" in r.getMessage()]
    assert "MAX_PAYLOAD_BYTES" in record.getMessage()


# One message's context cannot poison the next ------------------------------------


async def test_a_poisoned_context_does_not_reach_the_next_message(
    consumer: ApplicationCommunicator,
) -> None:
    poisoned = await make_task("job.poison_context")
    await consumer.send_input(ring(poisoned))
    await until(ended(poisoned, Status.RETRYING), what="the failure to be stored")
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    done = await until(ended(follow, Status.SUCCEEDED), what="the next task")
    assert done.result == "db fine"


# BaseException from user code ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("job.exit", "SystemExit"),
        ("job.interrupt", "KeyboardInterrupt"),
        ("job.custom", "Custom"),
        ("job.cancelled", "CancelledError"),
    ],
)
async def test_a_base_exception_is_a_failed_attempt_the_policy_decides(
    consumer: ApplicationCommunicator, kind: str, error_class: str
) -> None:
    task = await make_task(kind)
    await consumer.send_input(ring(task))
    # Not retryable by the default predicate (Exception only): dead at once.
    dead = await until(ended(task, Status.DEAD), what="the task to end")
    assert (dead.attempt, dead.error_class) == (1, error_class)
    attempt = await database_sync_to_async(AttemptRecord.objects.get)(task=task)
    assert attempt.outcome == "failed" and error_class in attempt.traceback
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the next task")


async def test_a_policy_that_retries_base_exceptions_retries_system_exit(
    consumer: ApplicationCommunicator,
) -> None:
    task = await make_task("job.any")
    await consumer.send_input(ring(task))
    retrying = await until(ended(task, Status.RETRYING), what="the retry")
    assert retrying.error_class == "SystemExit"
    await until(lambda: hooks, what="the on_retry hook", in_loop=True)
    assert hooks == ["retry SystemExit"]  # and its own SystemExit stopped nothing
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the next task")


async def test_system_exit_from_a_sync_handler_is_a_failed_attempt() -> None:
    comm = ApplicationCommunicator(
        SyncExit.as_asgi(), {"type": "channel", "channel": "hardening-sync"}
    )
    try:
        task = await make_task("job.exit", channel="hardening-sync")
        await comm.send_input(ring(task))
        dead = await until(ended(task, Status.DEAD), what="the task to end")
        assert dead.error_class == "SystemExit"
    finally:
        comm.stop(exceptions=False)


# Interruptions are free only a few times ------------------------------------------


def interrupted_before(task: TaskRecord, times: int) -> None:
    for attempt in range(1, times + 1):
        store.claim(
            task.id, attempt, worker="w:1", lease_seconds=30, default_max_attempts=3
        )
        assert store.interrupt(task.id, attempt, worker="w:1") is not None


@pytest.mark.parametrize(("before", "status"), [(2, "queued"), (3, "retrying")])
async def test_the_fourth_interruption_counts_as_an_attempt(
    before: int, status: str
) -> None:
    task = await make_task("job.block", max_attempts=3)
    await database_sync_to_async(interrupted_before)(task, before)
    comm = ApplicationCommunicator(
        Consumer.as_asgi(), {"type": "channel", "channel": CHANNEL}
    )
    await comm.send_input(ring(task, before + 1))
    await until(lambda: ran == ["block"], what="the attempt to start", in_loop=True)
    comm.stop(exceptions=False)  # a worker stopping: the attempt is cancelled
    again = await until(ended(task, status), what="the interruption to be stored")
    last = await database_sync_to_async(AttemptRecord.objects.get)(
        task=task, number=before + 1
    )
    assert last.outcome == "interrupted"
    if status == "retrying":  # counted: the cap did not grow this time
        assert (again.error_class, again.max_attempts) == (
            "AttemptInterrupted",
            3 + before,
        )
        assert last.decision == "retry"
    else:
        assert again.max_attempts == 3 + before + 1


# Recovery is decided by the task's own consumer -----------------------------------


class Quick(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(
        max_attempts=3, wait=wait_fixed(1), retry=retry_if_exception_type(OSError)
    )

    async def job_run(self, message: dict[str, Any]) -> None:
        return None


def lost_task(channel: str) -> TaskRecord:
    task, _ = store.create_task(
        channel=channel, type="job.run", payload={}, ring_timeout=30
    )
    store.claim(task.id, 1, worker="gone:1", lease_seconds=30, default_max_attempts=3)
    TaskRecord.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return task


async def test_only_a_worker_of_the_tasks_channel_recovers_it() -> None:
    task = await database_sync_to_async(lost_task)("hardening-quick")
    other = ChannelNameRouter({"hardening-other": Consumer.as_asgi()})
    await RetryingWorker(other, ["hardening-other"], get_channel_layer())._schedule()
    assert (await store.aget_task(task.id)).status == Status.RUNNING
    own = ChannelNameRouter({"hardening-quick": Quick.as_asgi()})
    await RetryingWorker(own, ["hardening-quick"], get_channel_layer())._schedule()
    again = await store.aget_task(task.id)
    # Quick's policy decided: its narrow retry= still retries a lost worker,
    # after its own 1 s, not the default policy's 10 s or more.
    assert (again.status, again.error_class) == (Status.RETRYING, "WorkerLost")
    assert again.due_at is not None
    assert again.due_at - again.updated_at <= timedelta(seconds=1.5)


# Store outages ------------------------------------------------------------------


def failing(times: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, raising OperationalError on its first ``times`` calls."""
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("connection refused")
        return real(*args, **kwargs)

    return call


def store_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "retrying_consumers.store"]


async def test_an_outcome_the_store_refused_is_written_when_it_is_back(
    consumer: ApplicationCommunicator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store, "succeed_many", failing(3, store.succeed_many))
    task = await make_task("job.ok")
    await consumer.send_input(ring(task))
    await until(ended(task, Status.SUCCEEDED), what="the outcome to be written")
    await until(lambda: len(store_records(caplog)) == 2, what="logs", in_loop=True)
    down, back = store_records(caplog)
    assert (down.levelno, down.outcome) == (logging.ERROR, "store_unavailable")
    assert (back.levelno, back.outcome) == (logging.WARNING, "store_back")
    assert back.failed_operations == 3
    assert ran == ["ok"]  # written, not run again
    follow = await make_task("job.ok")
    await consumer.send_input(ring(follow))
    await until(ended(follow, Status.SUCCEEDED), what="the instance to live on")


async def test_a_claim_the_store_refused_leaves_the_task_queued(
    consumer: ApplicationCommunicator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store, "claim_many", failing(1, store.claim_many))
    task = await make_task("job.ok")
    await consumer.send_input(ring(task))
    await consumer.send_input(ring(task))  # rung again: the store is back
    await until(ended(task, Status.SUCCEEDED), what="the second ring to run it")
    assert [r.outcome for r in store_records(caplog)] == [
        "store_unavailable",
        "store_back",
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]


async def test_a_scheduler_in_an_outage_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [0]

    async def down() -> None:
        calls[0] += 1
        if calls[0] <= 5:
            raise OperationalError("server closed the connection")

    worker = RetryingWorker(None, [CHANNEL], get_channel_layer())
    down.__name__ = "_schedule"
    chore = asyncio.create_task(worker._every(0.01, down))
    try:
        await until(lambda: calls[0] > 6, what="the chore to run on", in_loop=True)
    finally:
        chore.cancel()
    assert [r.outcome for r in store_records(caplog)] == [
        "store_unavailable",
        "store_back",
    ]
    assert not [r for r in caplog.records if r.name == "retrying_consumers.worker"]


async def test_leases_that_lapsed_in_an_outage_wait_for_their_workers(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    task = await database_sync_to_async(lost_task)("hardening-quick")
    health = StoreHealth()
    monkeypatch.setattr(worker_module, "store_health", health)
    own = ChannelNameRouter({"hardening-quick": Quick.as_asgi()})
    worker = RetryingWorker(own, ["hardening-quick"], get_channel_layer())
    health.failed("claim", OperationalError("gone"))
    await worker._schedule()  # the store is away: nothing is judged
    health.succeeded()
    await worker._schedule()  # back, but live workers get a lease to renew
    assert (await store.aget_task(task.id)).status == Status.RUNNING
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 0.05}
    await until(lambda: not health.settling(0.05), what="a lease after", in_loop=True)
    await worker._schedule()
    assert (await store.aget_task(task.id)).error_class == "WorkerLost"


# Receive errors ------------------------------------------------------------------


async def test_a_channel_layer_that_cannot_work_stops_the_worker_at_start() -> None:
    layer = RedisChannelLayer(
        hosts=[{"address": "redis://127.0.0.1:1/0?socket_timeout=abc"}]
    )
    worker = RetryingWorker(None, [CHANNEL], layer)
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        await worker.main()


async def test_other_receive_errors_back_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layer = get_channel_layer()

    async def broken(channel: str) -> dict[str, Any]:
        raise RuntimeError("something odd")

    monkeypatch.setattr(layer, "receive", broken)
    monkeypatch.setattr(worker_module, "MAX_BACKOFF", 0.4)
    worker = RetryingWorker(None, [CHANNEL], layer)
    worker.slots = asyncio.Semaphore(1)
    worker.channel_slots = {CHANNEL: asyncio.Semaphore(1)}
    worker.stopping = asyncio.Event()

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "receive from channel" in r.getMessage()]

    listener = asyncio.create_task(worker._listen(CHANNEL))
    try:
        await until(lambda: len(failures()) >= 4, what="four failures", in_loop=True)
    finally:
        listener.cancel()
    delays = [r.args[1] for r in failures()[:4]]  # type: ignore[index]
    assert delays == [0.1, 0.2, 0.4, 0.4]
    assert not [r for r in caplog.records if getattr(r, "outcome", "") == "poison"]
