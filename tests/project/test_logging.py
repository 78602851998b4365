"""The project's logging: mail about dead tasks only through NOTIFY_DEAD."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from django.core import mail
from django.tasks import TaskResult, default_task_backend

from retrying_consumers import notify
from retrying_consumers.logformat import ExceptLoggers
from retrying_consumers.tasks_consumer import DjangoTaskConsumer
from tests import django_tasks_defs as defs
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _admins(settings: Any, redis_client: Any) -> None:
    settings.DEBUG = False  # Django mails ADMINS only outside development mode
    settings.ADMINS = ["ops@example.com"]
    notify._notifier = None


@pytest.fixture
async def worker() -> AsyncIterator[ApplicationCommunicator]:
    comm = ApplicationCommunicator(
        DjangoTaskConsumer.as_asgi(), {"type": "channel", "channel": "default"}
    )
    yield comm
    comm.stop(exceptions=False)


async def run_to_the_end(worker: ApplicationCommunicator, result: Any) -> TaskResult:
    """Feed ``worker`` the rings of ``result``'s task until the task has ended."""
    layer = get_channel_layer()
    deadline = time.monotonic() + 20
    while not (fresh := await default_task_backend.aget_result(result.id)).is_finished:
        assert time.monotonic() < deadline, f"the task did not end: {fresh}"
        try:
            message = await asyncio.wait_for(layer.receive("default"), 0.5)
        except TimeoutError:
            continue  # a retry's ring comes from the store once it is due
        await worker.send_input(message)
    return fresh


def logged_failure(caplog: Any, task_id: str) -> Callable[[], bool]:
    """Whether Django has logged the task's failure (its task_finished receiver
    runs after the stored outcome, and any mail it causes is sent with it)."""

    def check() -> bool:
        return any(
            r.name == "django.tasks"
            and r.levelno == logging.ERROR
            and task_id in r.getMessage()
            for r in caplog.records
        )

    return check


async def test_a_failed_task_mails_nobody_without_notify_dead(
    settings: Any, worker: ApplicationCommunicator, caplog: Any
) -> None:
    settings.RETRYING_CONSUMERS = {"NOTIFY_DEAD": False, "SCHEDULER_INTERVAL": 0.1}

    result = await run_to_the_end(worker, await defs.doomed.aenqueue())
    await until(logged_failure(caplog, result.id), what="Django's log", in_loop=True)

    assert result.status == "FAILED"
    # Django still logs the failure at ERROR: only the mail is gone.
    failures = [
        r
        for r in caplog.records
        if r.name == "django.tasks" and r.levelno == logging.ERROR
    ]
    assert [result.id in r.getMessage() for r in failures] == [True]
    assert mail.outbox == []


async def test_notify_dead_mails_one_summary_per_dead_task(
    settings: Any, worker: ApplicationCommunicator, caplog: Any
) -> None:
    settings.RETRYING_CONSUMERS = {"NOTIFY_DEAD": True, "SCHEDULER_INTERVAL": 0.1}

    result = await run_to_the_end(worker, await defs.doomed.aenqueue())
    await until(lambda: mail.outbox, what="the summary mail", in_loop=True)
    await until(logged_failure(caplog, result.id), what="Django's log", in_loop=True)

    assert [m.subject for m in mail.outbox] == ["[Django] 1 task dead on default"], [
        m.body for m in mail.outbox
    ]
    assert result.id in mail.outbox[0].body


def test_server_errors_are_still_mailed_to_the_admins() -> None:
    logging.getLogger("django.request").error("Internal Server Error: /boom")

    assert [m.subject for m in mail.outbox] == [
        "[Django] ERROR: Internal Server Error: /boom"
    ]


def test_except_loggers_drops_the_named_loggers_and_their_children() -> None:
    keep = ExceptLoggers(["django.tasks"])

    def passes(name: str) -> bool:
        return bool(keep.filter(logging.LogRecord(name, 40, "", 0, "m", None, None)))

    assert not passes("django.tasks")
    assert not passes("django.tasks.backends")
    assert passes("django.tasksx")
    assert passes("django.request")
    assert passes("django")
