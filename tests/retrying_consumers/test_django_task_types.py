"""Each Django ``@task`` function has a type of its own, ``django.task.<path>``,
so that the admin, the page, ``/metrics`` and ``manage.py tasks`` single it out."""

from __future__ import annotations

import asyncio
import time
from io import StringIO
from typing import Any

import pytest
from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from django.core.management import call_command
from django.tasks import TaskResultStatus, default_task_backend
from django.test import Client
from django.urls import reverse

from retrying_consumers import RetryMixin, aenqueue
from retrying_consumers.metrics import render
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.tasks_backend import django_task_type, is_django_task_type
from retrying_consumers.tasks_consumer import DjangoTaskConsumer
from tests import django_tasks_defs as defs
from tests.retrying_consumers.ops_factories import make
from tests.retrying_consumers.test_metrics import samples, value

ECHO = "django.task.tests.django_tasks_defs.echo"
ADD = "django.task.tests.django_tasks_defs.add"
ADMIN = reverse("admin:retrying_consumers_taskrecord_changelist")


def listed(response: Any, *results: Any) -> list[bool]:
    """Which of ``results`` the page lists."""
    html = response.content.decode()
    return [str(result.id) in html for result in results]


def tasks(*args: str) -> str:
    out = StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


def test_the_type_names_the_function() -> None:
    assert django_task_type("myapp.tasks.send_welcome") == (
        "django.task.myapp.tasks.send_welcome"
    )
    # What no type can hold keeps the plain type, which still runs.
    assert django_task_type("myapp.tâches.envoyer") == "django.task"
    assert django_task_type("m." + "x" * 200) == "django.task"
    assert is_django_task_type("django.task")
    assert is_django_task_type(ECHO)
    assert not is_django_task_type("django.tasks")
    assert not is_django_task_type("other.django.task")


@pytest.mark.django_db
def test_enqueue_stores_the_functions_type() -> None:
    result = defs.echo.enqueue(1)
    assert TaskRecord.objects.get(pk=result.id).type == ECHO
    assert default_task_backend.get_result(result.id) == result


@pytest.mark.django_db
def test_the_admin_filters_and_searches_by_function(admin_client: Client) -> None:
    echo, add = defs.echo.enqueue(1), defs.add.enqueue(1, 2)
    assert listed(admin_client.get(ADMIN, {"type": ECHO}), echo, add) == [True, False]
    found = admin_client.get(ADMIN, {"q": "django_tasks_defs.add"})
    assert listed(found, echo, add) == [False, True]
    assert listed(admin_client.get(ADMIN, {"q": "django.task"}), echo, add) == [
        True,
        True,
    ]


@pytest.mark.django_db
def test_the_page_search_finds_one_function(admin_client: Client) -> None:
    echo, add = defs.echo.enqueue(1), defs.add.enqueue(1, 2)
    page = admin_client.get(reverse("dashboard"), {"q": "defs.echo"})
    assert listed(page, echo, add) == [True, False]


@pytest.mark.django_db
def test_metrics_count_tasks_by_type() -> None:
    defs.echo.enqueue(1)
    defs.echo.enqueue(2)
    defs.add.enqueue(1, 2)
    make(Status.DEAD, type="job.run")
    found = samples(render().decode())
    name = "retrying_consumers_tasks_by_type"
    assert value(found, name, type=ECHO, status="queued") == 2
    assert value(found, name, type=ADD, status="queued") == 1
    assert value(found, name, type="job.run", status="dead") == 1


@pytest.mark.django_db
def test_tasks_list_by_exact_type_or_prefix() -> None:
    echo, add = defs.echo.enqueue(1), defs.add.enqueue(1, 2)
    other = make(Status.QUEUED, type="job.run")
    exact = tasks("list", "--type", ECHO)
    assert [echo.id in exact, add.id in exact] == [True, False]
    every = tasks("list", "--type", "django.task.*")
    assert [echo.id in every, add.id in every, str(other.id) in every] == [
        True,
        True,
        False,
    ]
    both = tasks("list", "--type", ADD, "--type", "job.*")
    assert [echo.id in both, add.id in both, str(other.id) in both] == [
        False,
        True,
        True,
    ]


@pytest.mark.django_db
def test_tasks_retry_dead_of_one_function() -> None:
    echo = make(Status.DEAD, channel="default", type=ECHO)
    add = make(Status.DEAD, channel="default", type=ADD)
    tasks("retry", "--dead", "--type", ECHO)
    statuses = [TaskRecord.objects.get(pk=t.pk).status for t in (echo, add)]
    assert statuses == [Status.QUEUED, Status.DEAD]


async def run_until_finished(record_id: str) -> Any:
    """Run ``record_id``'s ring on a DjangoTaskConsumer; its final result."""
    comm = ApplicationCommunicator(
        DjangoTaskConsumer.as_asgi(), {"type": "channel", "channel": "default"}
    )
    try:
        ring = await asyncio.wait_for(get_channel_layer().receive("default"), 5)
        await comm.send_input(ring)
        deadline = time.monotonic() + 10
        while True:
            result = await default_task_backend.aget_result(record_id)
            if result.is_finished:
                return result
            assert time.monotonic() < deadline, f"not finished: {result}"
            await asyncio.sleep(0.02)
    finally:
        comm.stop(exceptions=False)


@pytest.mark.django_db(transaction=True)
async def test_a_worker_runs_a_task_by_its_functions_type(redis_client: Any) -> None:
    result = await defs.add.aenqueue(2, 3)
    done = await run_until_finished(result.id)
    assert (done.status, done.return_value) == (TaskResultStatus.SUCCESSFUL, 5)


@pytest.mark.django_db(transaction=True)
async def test_a_task_stored_with_the_plain_type_still_runs(redis_client: Any) -> None:
    """Tasks enqueued before types named the function run as they did."""
    result = await defs.add.aenqueue(2, 3)
    await get_channel_layer().receive("default")  # its ring, with the new type
    await TaskRecord.objects.filter(pk=result.id).aupdate(type="django.task")
    await get_channel_layer().send(
        "default", {"type": "django.task", "task_id": result.id, "attempt": 1}
    )
    done = await run_until_finished(result.id)
    assert (done.status, done.return_value) == (TaskResultStatus.SUCCESSFUL, 5)


class ReportConsumer(RetryMixin, AsyncConsumer):
    """Runs every ``report.<kind>`` with one handler, as DjangoTaskConsumer does."""

    store_results = True

    def handler_type(self, message_type: str) -> str:
        return "report" if message_type.startswith("report.") else message_type

    async def report(self, message: dict[str, Any]) -> str:
        return str(message["type"])


@pytest.mark.django_db(transaction=True)
async def test_handler_type_picks_the_handler_of_a_family_of_types(
    redis_client: Any,
) -> None:
    task_id = await aenqueue("reports", "report.sales")
    comm = ApplicationCommunicator(
        ReportConsumer.as_asgi(), {"type": "channel", "channel": "reports"}
    )
    try:
        await comm.send_input(await get_channel_layer().receive("reports"))
        deadline = time.monotonic() + 10
        while (record := await TaskRecord.objects.aget(pk=task_id)).status not in (
            Status.SUCCEEDED,
            Status.DEAD,
        ):
            assert time.monotonic() < deadline, record.status
            await asyncio.sleep(0.02)
    finally:
        comm.stop(exceptions=False)
    assert (record.status, record.result) == (Status.SUCCEEDED, "report.sales")
