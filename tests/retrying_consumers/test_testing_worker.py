"""The plugin's task_worker: a real RetryingWorker in a thread of the test."""

from __future__ import annotations

from typing import Any

import pytest
from django.tasks import TaskResultStatus

from tests import django_tasks_defs as defs
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["retrying_consumers.testing.pytest_plugin"]


def finished(result: Any) -> bool:
    return defs.flaky.get_result(result.id).is_finished  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_the_worker_runs_enqueued_tasks_with_their_retries(
    task_worker: Any, redis_client: Any
) -> None:
    worker = task_worker("default")
    result = defs.flaky.enqueue(1, "w")  # fails once, retried after 0.1 s
    wait_until(lambda: finished(result), what="the task to finish")
    done = defs.flaky.get_result(result.id)
    assert (done.status, done.attempts) == (TaskResultStatus.SUCCESSFUL, 2)
    assert worker.error is None


@pytest.mark.timeout(60)
def test_stop_ends_the_thread(redis_client: Any) -> None:
    from retrying_consumers.testing.threaded import ThreadedWorker

    worker = ThreadedWorker(["default"]).start()
    worker.stop()
    assert not worker._thread.is_alive()
    assert worker.error is None
