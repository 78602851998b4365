"""Retention: purging old finished records, automatically and by hand, and
consumers that do not store results."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.routing import ChannelNameRouter
from channels.testing import ApplicationCommunicator
from django.db import connection, transaction
from django.utils import timezone

from retrying_consumers import RetryMixin, RetryPolicy, retention, store
from retrying_consumers.conf import library_settings
from retrying_consumers.exceptions import (
    ConfigurationError,
    InvalidPolicy,
    TaskNotFound,
)
from retrying_consumers.models import AttemptRecord, Status, TaskRecord, WorkerRecord
from retrying_consumers.worker import RetryingWorker
from tests.retrying_consumers.ops_factories import make, worker
from tests.waiting import until

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@pytest.fixture(autouse=True)
def _fresh_schedule() -> None:
    retention._schedule.last_run = None


def a_bit_of_everything() -> dict[str, TaskRecord]:
    """Old and new tasks in every status; only some finished long ago."""
    return {
        "old_ok_1": make(Status.SUCCEEDED, finished_ago=10 * DAY, attempts=2),
        "old_ok_2": make(Status.SUCCEEDED, finished_ago=8 * DAY),
        "new_ok": make(Status.SUCCEEDED, finished_ago=DAY),
        "old_dead": make(Status.DEAD, finished_ago=30 * DAY, attempts=3),
        "new_dead": make(Status.DEAD, finished_ago=2 * DAY),
        "old_cancelled": make(Status.CANCELLED, finished_ago=30 * DAY),
        "queued": make(Status.QUEUED, created_ago=60 * DAY),
        "running": make(Status.RUNNING, created_ago=60 * DAY),
        "retrying": make(Status.RETRYING, created_ago=60 * DAY, attempts=2),
    }


def remaining() -> set[str]:
    return {str(pk) for pk in TaskRecord.objects.values_list("pk", flat=True)}


def ids(tasks: dict[str, TaskRecord], *names: str) -> set[str]:
    return {str(tasks[name].id) for name in names}


@pytest.mark.django_db
def test_purge_deletes_exactly_the_old_records_of_one_status() -> None:
    tasks = a_bit_of_everything()
    attempts_before = AttemptRecord.objects.count()

    assert retention.purge(Status.SUCCEEDED, WEEK) == 2

    assert remaining() == set(ids(tasks, *tasks)) - ids(tasks, "old_ok_1", "old_ok_2")
    gone = [tasks["old_ok_1"].id, tasks["old_ok_2"].id]
    assert not AttemptRecord.objects.filter(task_id__in=gone).exists()
    assert AttemptRecord.objects.count() == attempts_before - 3

    assert retention.purge(Status.DEAD, WEEK) == 1
    assert retention.purge(Status.CANCELLED, timedelta(days=29)) == 1
    assert remaining() == ids(
        tasks, "new_ok", "new_dead", "queued", "running", "retrying"
    )
    assert retention.purge(Status.SUCCEEDED, WEEK) == 0


@pytest.mark.django_db
def test_purge_works_in_batches_and_can_stop_early() -> None:
    for _ in range(5):
        make(Status.SUCCEEDED, finished_ago=10 * DAY)
    keep = make(Status.SUCCEEDED, finished_ago=DAY)

    assert retention.count_purgeable(Status.SUCCEEDED, WEEK) == 5
    assert retention.purge(Status.SUCCEEDED, WEEK, batch_size=2, max_batches=1) == 2
    assert retention.count_purgeable(Status.SUCCEEDED, WEEK) == 3
    assert retention.purge(Status.SUCCEEDED, WEEK, batch_size=2) == 3
    assert remaining() == {str(keep.id)}


@pytest.mark.django_db
def test_purge_takes_seconds_and_a_given_now() -> None:
    task = make(Status.DEAD, finished_ago=timedelta(seconds=100))
    now = timezone.now()
    assert retention.purge(Status.DEAD, 150, now=now) == 0
    assert retention.purge(Status.DEAD, 150, now=now + timedelta(seconds=60)) == 1
    assert not TaskRecord.objects.filter(pk=task.pk).exists()


@pytest.mark.parametrize(
    ("status", "age", "words"),
    [
        (Status.RUNNING, WEEK, "only finished tasks can be purged"),
        (Status.QUEUED, WEEK, "only finished tasks can be purged"),
        (Status.DEAD, -5, "must be >= 0"),
        (Status.DEAD, "7d", "seconds or a timedelta"),
    ],
)
def test_purge_refuses_unfinished_statuses_and_bad_ages(
    status: str, age: Any, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        retention.purge(status, age)


@pytest.mark.django_db
def test_purge_expired_follows_each_setting_separately(settings) -> None:
    tasks = a_bit_of_everything()
    settings.RETRYING_CONSUMERS = {}
    assert retention.purge_expired() == {}
    assert len(remaining()) == len(tasks)

    settings.RETRYING_CONSUMERS = {"PURGE_SUCCEEDED_AFTER": WEEK.total_seconds()}
    assert retention.purge_expired() == {"succeeded": 2}
    assert ids(tasks, "old_dead", "old_cancelled") <= remaining()

    settings.RETRYING_CONSUMERS = {
        "PURGE_DEAD_AFTER": WEEK.total_seconds(),
        "PURGE_CANCELLED_AFTER": 60 * DAY.total_seconds(),
    }
    assert retention.purge_expired() == {"dead": 1}
    assert remaining() == ids(
        tasks, "new_ok", "new_dead", "old_cancelled", "queued", "running", "retrying"
    )


@pytest.mark.django_db
def test_purge_expired_forgets_workers_silent_for_a_day(settings) -> None:
    settings.RETRYING_CONSUMERS = {}
    worker("host-a:1", heartbeat_ago=2)
    worker("host-b:2", heartbeat_ago=23 * 3600)
    worker("host-c:3", heartbeat_ago=25 * 3600)

    assert retention.purge_expired() == {"workers": 1}
    assert set(WorkerRecord.objects.values_list("pk", flat=True)) == {
        "host-a:1",
        "host-b:2",
    }


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"PURGE_DEAD_AFTER": "7d"}, "'PURGE_DEAD_AFTER'] must be a number"),
        ({"PURGE_SUCCEEDED_AFTER": 0}, "'PURGE_SUCCEEDED_AFTER'] must be > 0"),
        ({"PURGE_CANCELLED_AFTER": True}, "must be a number"),
    ],
)
def test_retention_settings_are_validated(settings, options, words) -> None:
    settings.RETRYING_CONSUMERS = options
    with pytest.raises(ConfigurationError) as err:
        library_settings()
    assert words in str(err.value)


def test_retention_settings_default_to_keeping_everything(settings) -> None:
    settings.RETRYING_CONSUMERS = {"PURGE_DEAD_AFTER": None}
    lib = library_settings()
    assert (lib.purge_succeeded_after, lib.purge_dead_after) == (None, None)
    assert retention.retention_ages(lib) == {}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.django_db(transaction=True)
async def test_schedule_purges_at_most_once_per_interval(settings) -> None:
    settings.RETRYING_CONSUMERS = {"PURGE_SUCCEEDED_AFTER": WEEK.total_seconds()}
    clock = FakeClock()
    schedule = retention.PurgeSchedule(interval=60, clock=clock)
    old = database_sync_to_async(make)

    await old(Status.SUCCEEDED, finished_ago=10 * DAY)
    assert await schedule.arun() == {"succeeded": 1}
    await old(Status.SUCCEEDED, finished_ago=10 * DAY)
    clock.now += 59
    assert await schedule.arun() == {}
    assert await TaskRecord.objects.acount() == 1
    clock.now += 1
    assert await schedule.arun() == {"succeeded": 1}
    assert await TaskRecord.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_the_worker_scheduler_runs_the_purge(settings) -> None:
    settings.RETRYING_CONSUMERS = {"PURGE_DEAD_AFTER": WEEK.total_seconds()}
    old = await database_sync_to_async(make)(Status.DEAD, finished_ago=10 * DAY)
    young = await database_sync_to_async(make)(Status.DEAD, finished_ago=DAY)
    worker = RetryingWorker(application=None, channels=[], channel_layer=None)

    await worker._schedule()

    assert [
        str(pk) async for pk in TaskRecord.objects.values_list("pk", flat=True)
    ] == [str(young.id)]
    assert not await TaskRecord.objects.filter(pk=old.pk).aexists()


@pytest.mark.django_db(transaction=True)
def test_purge_skips_a_row_another_transaction_holds() -> None:
    """A task locked by a concurrent change (e.g. a re-drive) is left alone."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are a PostgreSQL feature; SQLite locks the database")
    locked = make(Status.DEAD, finished_ago=10 * DAY)
    free = make(Status.DEAD, finished_ago=10 * DAY)
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            TaskRecord.objects.select_for_update().get(pk=locked.pk)
            holding.set()
            release.wait(timeout=30)
        connection.close()
        done.set()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        assert retention.purge(Status.DEAD, WEEK) == 1
    finally:
        release.set()
        thread.join(timeout=30)
    assert done.is_set()
    assert remaining() == {str(locked.id)}
    assert not TaskRecord.objects.filter(pk=free.pk).exists()


@pytest.mark.django_db
def test_retry_now_after_purge_says_not_found() -> None:
    task = make(Status.DEAD, finished_ago=10 * DAY)
    retention.purge(Status.DEAD, WEEK)
    with pytest.raises(TaskNotFound):
        store.retry_now(task.id, ring_timeout=30)


# "Don't store results", per consumer or per message type ---------------------------


class Reports(RetryMixin, AsyncConsumer):
    store_results = {"report.build": False, "report.keep": True}

    async def report_build(self, message: dict[str, Any]) -> str:
        return "a big report nobody reads"

    async def report_keep(self, message: dict[str, Any]) -> str:
        return "kept"

    async def report_other(self, message: dict[str, Any]) -> str:
        return "follows the setting"


def test_store_results_per_message_type(settings) -> None:
    consumer = Reports()
    settings.RETRYING_CONSUMERS = {}
    assert consumer.stores_result("report.build") is False
    assert consumer.stores_result("report.keep") is True
    assert consumer.stores_result("report.other") is True
    settings.RETRYING_CONSUMERS = {"STORE_RESULTS": False}
    assert consumer.stores_result("report.other") is False
    assert consumer.stores_result("report.keep") is True


@pytest.mark.django_db(transaction=True)
async def test_a_type_that_stores_no_result_succeeds_without_one(settings) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    comm = ApplicationCommunicator(
        Reports.as_asgi(), {"type": "channel", "channel": "reports"}
    )
    results = {}
    try:
        for message_type in ("report.build", "report.keep"):
            task, _ = await store.acreate_task(
                channel="reports", type=message_type, payload={}, ring_timeout=30
            )
            await comm.send_input(
                {"type": message_type, "task_id": str(task.id), "attempt": 1}
            )

            def finished(pk: Any = task.pk) -> TaskRecord | None:
                fresh = TaskRecord.objects.get(pk=pk)
                return fresh if fresh.status == Status.SUCCEEDED else None

            results[message_type] = (await until(finished, what="success")).result
    finally:
        comm.stop(exceptions=False)
    assert results == {"report.build": None, "report.keep": "kept"}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("no", "store_results must be True, False, None or a dict"),
        ({"report.missing": False}, "has no handler method 'report_missing'"),
        ({"report.build": "no"}, "store_results['report.build'] must be True or False"),
    ],
)
def test_store_results_is_validated_when_the_class_is_defined(value, words) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(words)):

        class Bad(RetryMixin, AsyncConsumer):
            store_results = value

            async def report_build(self, message: dict[str, Any]) -> None:
                pass


class ExpiringConsumer(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(result_expires=WEEK.total_seconds())
    retry_policies = {
        "job.brief": RetryPolicy(result_expires=60.0),
        "job.kept": RetryPolicy(),
    }

    async def job_brief(self, message: dict[str, Any]) -> None:
        pass

    async def job_kept(self, message: dict[str, Any]) -> None:
        pass


@pytest.mark.django_db
def test_result_expires_per_type_beside_the_global_settings(settings) -> None:
    settings.RETRYING_CONSUMERS = {}
    minute_old = {"finished_ago": timedelta(minutes=2)}
    brief = make(Status.SUCCEEDED, channel="c", type="job.brief", **minute_old)
    fresh_brief = make(Status.SUCCEEDED, channel="c", type="job.brief")
    brief_dead = make(Status.DEAD, channel="c", type="job.brief", **minute_old)
    kept = make(Status.SUCCEEDED, channel="c", type="job.kept", finished_ago=WEEK * 2)
    other = make(Status.SUCCEEDED, channel="c", type="job.other", finished_ago=WEEK * 2)
    young_other = make(Status.SUCCEEDED, channel="c", type="job.other", **minute_old)
    elsewhere = make(Status.SUCCEEDED, channel="d", type="job.brief", **minute_old)
    expiries = retention.result_expiries("c", ExpiringConsumer)

    assert retention.purge_expired(expiries=expiries) == {"expired_results": 2}
    gone = {str(brief.id), str(other.id)}
    assert not gone & remaining()
    for task in (fresh_brief, brief_dead, kept, young_other, elsewhere):
        assert str(task.id) in remaining()


def test_result_expires_is_validated() -> None:
    with pytest.raises(InvalidPolicy, match="result_expires"):
        RetryPolicy(result_expires=0)


@pytest.mark.django_db(transaction=True)
async def test_the_worker_purges_by_its_consumers_result_expires(settings) -> None:
    settings.RETRYING_CONSUMERS = {}
    old = await database_sync_to_async(make)(
        Status.SUCCEEDED, channel="c", type="job.brief", finished_ago=DAY
    )
    app = ExpiringConsumer.as_asgi()
    router = ChannelNameRouter({"c": app})
    worker = RetryingWorker(application=router, channels=["c"], channel_layer=None)

    await worker._schedule()

    assert not await TaskRecord.objects.filter(pk=old.pk).aexists()
