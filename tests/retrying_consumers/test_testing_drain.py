"""retrying_consumers.testing.drain: every unfinished task run to its end."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus

from retrying_consumers import enqueue
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.testing import DrainTimeout, drain
from tests import django_tasks_defs as defs


@pytest.mark.django_db(transaction=True)
def test_queued_and_retrying_tasks_run_to_their_end_at_once() -> None:
    flaky = defs.flaky.enqueue(2, "x")  # retries after attempts 1 and 2
    doomed = defs.doomed.enqueue()
    assert drain() == 2
    assert defs.flaky.get_result(flaky.id).status == TaskResultStatus.SUCCESSFUL
    assert defs.doomed.get_result(doomed.id).status == TaskResultStatus.FAILED
    assert not TaskRecord.objects.exclude(status__in=[Status.SUCCEEDED, Status.DEAD])
    assert drain() == 0


@pytest.mark.django_db(transaction=True)
def test_what_is_left_is_named_when_time_is_up() -> None:
    task_id = enqueue("nowhere", "job.lost", {})
    with pytest.raises(DrainTimeout) as caught:
        drain(timeout=0.2)
    message = str(caught.value)
    assert message.startswith("1 task(s) unfinished after 0.2 s:")
    assert f"{task_id} job.lost on 'nowhere': queued" in message
    assert "no consumer is routed to it" in message


@pytest.mark.django_db(transaction=True)
def test_a_running_task_is_waited_for() -> None:
    task_id = enqueue("default", "django.task", {})
    TaskRecord.objects.filter(pk=task_id).update(status=Status.RUNNING, attempt=1)
    with pytest.raises(DrainTimeout, match=": running, attempt 1"):
        drain(timeout=0.2)


@pytest.mark.django_db
def test_a_transaction_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"transaction=True"):
        drain()
