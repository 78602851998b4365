"""Django's @task functions on real runworker processes, Redis and the test database.

The workers run the project's ASGI application with ``django_tasks_settings``:
its TASKS has two queues, and the project's routing serves both of them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.tasks import TaskResult, TaskResultStatus, default_task_backend
from django.utils import timezone

from retrying_consumers.models import AttemptRecord, TaskRecord, WorkerRecord
from tests import django_tasks_defs as defs
from tests.e2e import django_tasks_settings
from tests.processes import Child, running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUES = ["default", "dj-e2e-emails"]


@pytest.fixture(autouse=True)
def same_settings_as_the_workers(settings: Any, redis_client: Any) -> None:
    settings.TASKS = django_tasks_settings.TASKS
    settings.RETRYING_CONSUMERS = django_tasks_settings.RETRYING_CONSUMERS


def workers(tmp_path: Path, count: int) -> list[Child]:
    return start_workers(tmp_path, count, QUEUES, "tests.e2e.django_tasks_settings")


def finished(result: TaskResult, timeout: float = 30) -> TaskResult:
    wait_until(
        lambda: default_task_backend.get_result(result.id).is_finished,
        timeout,
        f"{result.task.name} to finish",
    )
    return default_task_backend.get_result(result.id)


def attempts(result: TaskResult) -> list[AttemptRecord]:
    return list(AttemptRecord.objects.filter(task_id=result.id).order_by("number"))


def test_django_tasks_retry_with_backoff_and_die_on_real_workers(
    tmp_path: Path,
) -> None:
    children = workers(tmp_path, 2)
    with running(children):
        worker_ids = set(WorkerRecord.objects.values_list("id", flat=True))
        flaky = defs.flaky.enqueue(2, "v")
        doomed = defs.doomed.enqueue()
        flaky_done, dead = finished(flaky), finished(doomed)
        assert all(c.alive() for c in children)
    output = "".join(c.output() for c in children)

    assert flaky_done.status == TaskResultStatus.SUCCESSFUL
    assert flaky_done.return_value == {"value": "v", "attempt": 3}
    assert flaky_done.attempts == 3
    assert set(flaky_done.worker_ids) <= worker_ids
    assert [e.exception_class for e in flaky_done.errors] == [defs.Boom, defs.Boom]
    first, second, last = attempts(flaky)
    for failed in (first, second):  # retried after the task's own backoff
        assert failed.next_attempt_at - failed.finished_at == timedelta(seconds=0.1)
        assert failed.next_attempt_at <= attempts(flaky)[failed.number].started_at
    assert last.outcome == "succeeded"
    assert TaskRecord.objects.get(pk=flaky.id).progress_message == "done"

    assert dead.status == TaskResultStatus.FAILED
    assert dead.attempts == 2
    assert [e.exception_class for e in dead.errors] == [defs.Boom, defs.Boom]
    assert TaskRecord.objects.get(pk=doomed.id).reason == "attempts exhausted (2 of 2)"
    # Django's own task_finished receiver logs a failed task at ERROR.
    assert f"Task id={doomed.id}" in output


def test_async_deferred_and_other_queue_tasks_on_a_real_worker(
    tmp_path: Path,
) -> None:
    [worker] = workers(tmp_path, 1)
    with running([worker]):
        run_after = timezone.now() + timedelta(seconds=1)
        deferred = defs.echo.using(run_after=run_after).enqueue("later")
        added = defs.add.enqueue(2, 3)
        emailed = defs.echo.using(queue_name="dj-e2e-emails").enqueue("hi")
        results = [finished(r) for r in (added, emailed, deferred)]
        assert worker.alive()

    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 3
    done_add, done_email, done_deferred = results
    assert done_add.return_value == 5
    assert done_email.return_value == {"args": ["hi"], "kwargs": {}}
    assert TaskRecord.objects.get(pk=emailed.id).channel == "dj-e2e-emails"
    assert done_deferred.task.run_after == run_after
    [attempt] = attempts(deferred)
    assert attempt.started_at >= run_after
