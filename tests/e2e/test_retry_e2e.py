"""Retries through a real runworker process, the real Redis and the test database."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime.examples import EXAMPLES_CHANNEL
from retrying_consumers import enqueue
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.processes import process_env, running, start_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def status(task_id) -> str:
    return TaskRecord.objects.get(pk=task_id).status


def test_flaky_task_succeeds_on_retry_and_doomed_task_ends_dead(
    tmp_path: Path, redis_client
) -> None:
    worker = start_worker(process_env(), tmp_path, [EXAMPLES_CHANNEL])
    with running([worker]):
        flaky = enqueue(EXAMPLES_CHANNEL, "example.flaky", {"fail_times": 1})
        doomed = enqueue(EXAMPLES_CHANNEL, "example.doomed")
        long = enqueue(EXAMPLES_CHANNEL, "example.long", {"steps": 4})
        wait_until(lambda: status(flaky) == Status.SUCCEEDED, 20, "flaky to succeed")
        wait_until(lambda: status(doomed) == Status.DEAD, 30, "doomed to end dead")
        wait_until(lambda: status(long) == Status.SUCCEEDED, 20, "long to finish")
        assert worker.alive()

    flaky_outcomes = list(
        AttemptRecord.objects.filter(task_id=flaky).values_list("outcome", flat=True)
    )
    assert flaky_outcomes == ["failed", "succeeded"]
    assert TaskRecord.objects.get(pk=flaky).result == "succeeded on attempt 2"

    dead = TaskRecord.objects.get(pk=doomed)
    assert (dead.attempt, dead.max_attempts) == (3, 3)
    assert dead.reason == "attempts exhausted (3 of 3)"
    assert dead.error_class == "PermanentError"
    assert "PermanentError" in worker.output()

    done = TaskRecord.objects.get(pk=long)
    assert (done.progress_current, done.progress_total) == (4, 4)
    assert done.result == 4
