"""ChannelsBackend's EAGER option: @task functions run at enqueue, with retries."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.tasks import TaskResultStatus, default_task_backend
from django.tasks.exceptions import InvalidTaskBackend

from retrying_consumers.models import AttemptRecord, TaskRecord
from tests import django_tasks_defs as defs

BACKEND = "retrying_consumers.tasks_backend.ChannelsBackend"


@pytest.fixture(autouse=True)
def eager(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"EAGER": True}}}
    defs.backoff_calls.clear()


@pytest.mark.django_db(transaction=True)
def test_a_flaky_task_is_retried_at_once_with_context_and_progress() -> None:
    result = defs.flaky.enqueue(2, "x")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"value": "x", "attempt": 3}
    assert [e.exception_class_path for e in result.errors] == [
        "tests.django_tasks_defs.Boom",
        "tests.django_tasks_defs.Boom",
    ]
    task = TaskRecord.objects.get(pk=result.id)
    assert (task.progress_current, task.progress_message) == (1, "done")


@pytest.mark.django_db(transaction=True)
def test_max_attempts_is_kept_and_the_task_fails() -> None:
    result = defs.doomed.enqueue()
    assert result.status == TaskResultStatus.FAILED
    assert AttemptRecord.objects.filter(task_id=result.id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_backoff_is_asked_but_not_waited_for() -> None:
    result = defs.recorded.enqueue()
    assert result.status == TaskResultStatus.FAILED
    assert len(defs.backoff_calls) == 2  # after attempts 1 and 2, not after 3
    once = defs.once.enqueue()  # backoff() returns None: give up
    assert (once.status, len(once.errors)) == (TaskResultStatus.FAILED, 1)


@pytest.mark.django_db(transaction=True)
def test_the_result_is_stored_as_without_eager() -> None:
    result = defs.echo.enqueue(1, k="v")
    assert default_task_backend.get_result(result.id).return_value == {
        "args": [1],
        "kwargs": {"k": "v"},
    }


@pytest.mark.django_db(transaction=True)
def test_no_channel_layer_is_reached(settings: Any, caplog: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:9/0"]},
        }
    }
    assert defs.flaky.enqueue(1, 2).status == TaskResultStatus.SUCCESSFUL
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.django_db(transaction=True)
async def test_aenqueue_runs_async_tasks_eagerly() -> None:
    result = await defs.add.aenqueue(2, 3)
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 5)
    progress = await defs.async_progress.aenqueue(4)
    assert progress.status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db
def test_a_transaction_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"transaction=True"):
        defs.echo.enqueue()
    assert not TaskRecord.objects.exists()


def test_eager_must_be_a_bool(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"EAGER": "yes"}}}
    with pytest.raises(InvalidTaskBackend, match=r"\['EAGER'\] must be True or False"):
        default_task_backend.max_attempts  # noqa: B018
