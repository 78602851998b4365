"""Periodic tasks through three real runworker processes, one of them SIGKILLed
while it runs a tick's task: every tick is still exactly one task."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from retrying_consumers.models import (
    AttemptRecord,
    ScheduleTick,
    Status,
    TaskRecord,
    WorkerRecord,
)
from tests.e2e import schedule_task_settings
from tests.e2e.schedule_settings import RETRYING_CONSUMERS, SCHEDULE
from tests.e2e.schedule_task_settings import TASK_SCHEDULE
from tests.processes import running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

#: Ticks that must follow the kill before the test looks at the store.
TICKS_AFTER_KILL = 5


@pytest.fixture(autouse=True)
def schedule_settings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def tick_tasks() -> Any:
    return TaskRecord.objects.filter(
        idempotency_key__startswith=f"schedule:{SCHEDULE}@"
    )


def test_each_tick_is_one_task_with_three_workers_and_one_killed_mid_tick(
    tmp_path: Path,
) -> None:
    children = start_workers(tmp_path, 3, ["fault-a"], "tests.e2e.schedule_settings")
    victim = children[0]
    with running(children):
        victim_id = WorkerRecord.objects.get(pid=victim.process.pid).id
        wait_until(
            lambda: AttemptRecord.objects.filter(
                worker=victim_id, finished_at=None, task__in=tick_tasks()
            ).exists(),
            20,
            "the victim to run a tick's task",
        )
        victim.process.send_signal(signal.SIGKILL)
        killed = set(
            AttemptRecord.objects.filter(
                worker=victim_id, finished_at=None, task__in=tick_tasks()
            ).values_list("task_id", flat=True)
        )
        assert killed
        ticks_at_kill = ScheduleTick.objects.filter(schedule=SCHEDULE).count()
        wait_until(
            lambda: (
                ScheduleTick.objects.filter(schedule=SCHEDULE).count()
                >= ticks_at_kill + TICKS_AFTER_KILL
                and TaskRecord.objects.filter(
                    pk__in=killed, status=Status.SUCCEEDED
                ).count()
                == len(killed)
            ),
            30,
            "more ticks, and the killed ticks' tasks to succeed on another worker",
        )
        assert all(child.alive() for child in children[1:])

    ticks = list(ScheduleTick.objects.filter(schedule=SCHEDULE).order_by("tick_at"))
    tasks = {task.pk: task for task in tick_tasks()}
    # One task per tick, and one tick per task: no tick enqueued twice or lost.
    assert len(ticks) >= ticks_at_kill + TICKS_AFTER_KILL
    assert sorted(tasks) == sorted(tick.task_id for tick in ticks)
    assert len({tick.tick_at for tick in ticks}) == len(ticks)
    for tick in ticks:
        key = f"schedule:{SCHEDULE}@{tick.tick_at.isoformat()}"
        assert tasks[tick.task_id].idempotency_key == key
    # Ticks fall on the interval's grid (whole seconds): they do not drift.
    assert all(t.tick_at.microsecond == 0 for t in ticks)
    # Every worker took ticks, not one "beat" process.
    assert len({t.worker for t in ticks}) >= 2
    # The killed attempts counted as lost and their tasks ran again elsewhere.
    for task_id in killed:
        attempts = AttemptRecord.objects.filter(task_id=task_id).order_by("number")
        assert [a.outcome for a in attempts] == ["worker_lost", "succeeded"]
        assert attempts[1].worker != victim_id
    # No tick's task succeeded twice.
    runs = Counter(
        AttemptRecord.objects.filter(
            task_id__in=tasks, outcome="succeeded"
        ).values_list("task_id", flat=True)
    )
    assert max(runs.values()) == 1


def test_a_task_function_schedule_runs_on_two_workers(
    tmp_path: Path, settings: Any
) -> None:
    settings.TASKS = schedule_task_settings.TASKS
    settings.RETRYING_CONSUMERS = schedule_task_settings.RETRYING_CONSUMERS
    children = start_workers(
        tmp_path, 2, ["default"], "tests.e2e.schedule_task_settings"
    )
    ticks = ScheduleTick.objects.filter(schedule=TASK_SCHEDULE)
    with running(children):
        wait_until(
            lambda: (
                TaskRecord.objects.filter(
                    pk__in=ticks.values("task_id"), status=Status.SUCCEEDED
                ).count()
                >= 3
            ),
            30,
            "three ticks of the @task schedule to succeed",
        )
    tasks = TaskRecord.objects.filter(pk__in=ticks.values("task_id"))
    assert tasks.count() == ticks.count()
    assert TaskRecord.objects.count() == ticks.count()  # nothing else enqueued
    done = tasks.filter(status=Status.SUCCEEDED)
    for task in done:
        assert task.type == "django.task.tests.django_tasks_defs.echo"
        assert task.result == {"args": ["tick"], "kwargs": {"n": 1}}
