"""The worker under faults: real runworker processes, the real Redis, the test DB."""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
from channels.layers import channel_layers
from django.db import transaction

from retrying_consumers import enqueue
from retrying_consumers.conf import LibrarySettings
from retrying_consumers.models import AttemptRecord, Status, TaskRecord, WorkerRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import Child, running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def short_rings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def workers(tmp_path: Path, count: int, channels: list[str], **env: str) -> list[Child]:
    return start_workers(tmp_path, count, channels, "tests.e2e.fault_settings", **env)


def many(count: int, type: str, channel: str = "fault-a", **payload: Any) -> list[Any]:
    return [enqueue(channel, type, payload) for _ in range(count)]


def count_status(ids: list[Any], status: str) -> int:
    return TaskRecord.objects.filter(pk__in=ids, status=status).count()


def all_succeeded(ids: list[Any], timeout: float) -> None:
    wait_until(
        lambda: count_status(ids, Status.SUCCEEDED) == len(ids),
        timeout,
        f"{len(ids)} tasks to succeed",
    )


def worker_of(child: Child) -> str:
    return WorkerRecord.objects.get(pid=child.process.pid).id


def test_sigkill_mid_task_loses_nothing_and_reruns_only_the_killed_attempts(
    tmp_path: Path,
) -> None:
    children = workers(tmp_path, 2, ["fault-a"])
    victim, survivor = children
    with running(children):
        victim_id = worker_of(victim)
        ids = many(200, "fault.sleep", seconds=0.05)
        wait_until(
            lambda: AttemptRecord.objects.filter(
                worker=victim_id, finished_at=None
            ).exists(),
            20,
            "the victim to be mid-task",
        )
        victim.process.send_signal(signal.SIGKILL)
        all_succeeded(ids, 60)
        assert survivor.alive()

    attempts = list(AttemptRecord.objects.filter(task_id__in=ids).order_by("number"))
    by_task: dict[Any, list[AttemptRecord]] = {}
    for attempt in attempts:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    rerun = {t: a for t, a in by_task.items() if len(a) > 1}
    assert rerun, "the victim was killed mid-task, so some attempt must have re-run"
    for task_attempts in rerun.values():
        *lost, last = task_attempts
        assert [a.outcome for a in lost] == ["worker_lost"] * len(lost)
        assert {a.worker for a in lost} == {victim_id}
        assert last.outcome == "succeeded"
    # One killed process can only have been running its concurrency's worth.
    assert len(rerun) <= LibrarySettings().worker_concurrency
    # No attempt of a task ran while another of its attempts was running.
    for task_attempts in by_task.values():
        for earlier, later in itertools.pairwise(task_attempts):
            assert earlier.finished_at <= later.started_at


def test_flushed_redis_loses_no_task(tmp_path: Path, redis_client: Any) -> None:
    children = workers(tmp_path, 2, ["fault-a"])
    with running(children):
        ids = many(60, "fault.sleep", seconds=0.2)
        wait_until(lambda: count_status(ids, Status.SUCCEEDED) >= 5, 20, "a start")
        redis_client.flushall()
        all_succeeded(ids, 60)
        assert all(c.alive() for c in children)


def test_sigterm_finishes_the_task_in_flight_and_exits_0(tmp_path: Path) -> None:
    [worker] = workers(tmp_path, 1, ["fault-a"])
    with running([worker]):
        [task_id] = many(1, "fault.sleep", seconds=2)
        wait_until(
            lambda: count_status([task_id], Status.RUNNING) == 1, 20, "the task to run"
        )
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(20) == 0, worker.output()
    task = TaskRecord.objects.get(pk=task_id)
    assert task.status == Status.SUCCEEDED
    assert task.attempt == 1
    assert not WorkerRecord.objects.exists()  # a clean stop leaves the registry


def test_second_sigterm_interrupts_and_hands_the_task_back(tmp_path: Path) -> None:
    [worker] = workers(tmp_path, 1, ["fault-a"])
    with running([worker]):
        [task_id] = many(1, "fault.sleep", seconds=30)
        wait_until(
            lambda: count_status([task_id], Status.RUNNING) == 1, 20, "the task to run"
        )
        worker.signal(signal.SIGTERM)
        wait_until(lambda: "no new messages" in worker.output(), 10, "the first signal")
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(20) == 0, worker.output()
    task = TaskRecord.objects.get(pk=task_id)
    assert task.status == Status.QUEUED
    assert task.max_attempts == 6  # the interrupted attempt is given back
    [attempt] = task.attempts.all()
    assert attempt.outcome == "interrupted"


def test_poison_messages_are_logged_once_and_other_channels_keep_working(
    tmp_path: Path, redis_client: Any
) -> None:
    children = workers(tmp_path, 1, ["fault-a", "fault-b", "fault-unrouted"])
    [worker] = children
    with running(children):
        key = b"asgifault-a"
        # Scored now, like channels-redis's own sends: each send removes the
        # messages scored older than the layer's expiry.
        now = time.time()
        for body in (
            os.urandom(12) + b"\xc1",  # not msgpack
            os.urandom(12) + msgpack.packb({"no": "type"}),
            os.urandom(12) + msgpack.packb([1, 2, 3]),
            os.urandom(12)
            + msgpack.packb({"type": "retrying_consumers.rings", "rings": "?"}),
        ):
            redis_client.zadd(key, {body: now})
        redis_client.zadd(
            b"asgifault-unrouted",
            {os.urandom(12) + msgpack.packb({"type": "fault.noop"}): now},
        )
        ids = many(3, "fault.noop", "fault-b") + many(3, "fault.noop", "fault-a")
        all_succeeded(ids, 20)
        wait_until(
            lambda: worker.output().count("poison message dropped") >= 5, 10, "logs"
        )
        assert worker.alive()
    log = worker.output()
    assert log.count("poison message dropped") == 5
    assert len(re.findall(r"problem=undecodable message", log)) == 1
    assert len(re.findall(r"problem=malformed batch of rings", log)) == 1
    assert len(re.findall(r"problem=no consumer is routed", log)) == 1


def most_at_once(attempts: list[AttemptRecord]) -> int:
    """The most attempts of ``attempts`` that were running at the same time."""
    edges = sorted(
        [(a.started_at, 1) for a in attempts] + [(a.finished_at, -1) for a in attempts]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_a_burst_is_shared_by_two_idle_workers(tmp_path: Path) -> None:
    # The consumer runs 4 at a time per process (worker_concurrency = 4),
    # below the workers' own --concurrency (32 by default).
    children = workers(tmp_path, 2, ["fault-few"])
    with running(children):
        names = [worker_of(c) for c in children]
        with transaction.atomic():  # the 20 rings leave as one batch message
            ids = many(20, "fault.sleep", "fault-few", seconds=0.5)
        all_succeeded(ids, 30)
    attempts = list(AttemptRecord.objects.filter(task_id__in=ids))
    ran = Counter(a.worker for a in attempts)
    assert set(ran) == set(names)
    assert all(6 <= ran[name] <= 14 for name in names), ran
    # Each worker took only what its 4 slots could run, and handed back the rest.
    for name in names:
        assert most_at_once([a for a in attempts if a.worker == name]) <= 4


def test_sync_consumers_take_one_message_at_a_time(tmp_path: Path) -> None:
    children = workers(tmp_path, 2, ["fault-sync"])
    with running(children):
        names = [worker_of(c) for c in children]
        with transaction.atomic():
            ids = many(8, "fault.block", "fault-sync", seconds=0.3)
        all_succeeded(ids, 30)
    attempts = list(AttemptRecord.objects.filter(task_id__in=ids))
    ran = Counter(a.worker for a in attempts)
    # One thread runs a process's sync handlers: a worker holding more than
    # one would only make the other wait.
    assert set(ran) == set(names), ran
    for name in names:
        assert most_at_once([a for a in attempts if a.worker == name]) == 1


def test_a_full_channel_delays_tasks_and_loses_none(tmp_path: Path, settings) -> None:
    layers = {
        "default": {
            **settings.CHANNEL_LAYERS["default"],
            "CONFIG": {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "capacity": 5},
        }
    }
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends.clear()
    try:
        ids = many(30, "fault.noop")
        assert count_status(ids, Status.QUEUED) == 30
        children = workers(tmp_path, 1, ["fault-a"], CHANNEL_CAPACITY="5")
        with running(children):
            all_succeeded(ids, 60)
    finally:
        channel_layers.backends.clear()


def test_two_workers_execute_each_of_2000_tasks_exactly_once(tmp_path: Path) -> None:
    children = workers(tmp_path, 2, ["fault-a"])
    with running(children):
        ids = many(2000, "fault.noop")
        all_succeeded(ids, 120)
    counts = Counter(
        AttemptRecord.objects.filter(task_id__in=ids).values_list("task_id", flat=True)
    )
    assert len(counts) == 2000
    assert set(counts.values()) == {1}


def test_a_hung_handler_times_out_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    children = workers(tmp_path, 1, ["fault-a"])
    with running(children):
        [hung] = many(1, "fault.hang")
        wait_until(lambda: count_status([hung], Status.RUNNING) == 1, 20, "hang start")
        others = many(5, "fault.noop")
        all_succeeded(others, 20)
        wait_until(lambda: count_status([hung], Status.DEAD) == 1, 30, "hang to die")
    outcomes = list(
        AttemptRecord.objects.filter(task_id=hung).values_list("outcome", flat=True)
    )
    assert outcomes == ["timed_out", "timed_out"]
