"""Running every unfinished task to its end, at once: :func:`drain`.

Like Oban's ``drain_queue``: each queued or retrying task runs on the
consumer that the project's channel router routes its channel to, through
the worker's own code path, retries without their waits (see
:mod:`retrying_consumers.eager`). Tasks running in a worker are waited for.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async

from ..checks import load_application
from ..models import ACTIVE, Status, TaskRecord
from ..running.eager import AttemptNotRun, arun_stored, check_not_atomic
from ..running.routes import channel_routes

#: Unfinished tasks a failed drain names, at most.
SHOWN_TASKS = 10


class DrainTimeout(AssertionError):
    """Tasks were still unfinished when :func:`drain`'s time was up."""


def drain(timeout: float = 10.0) -> int:
    """Run every unfinished task until none is left; return how many ran here.

    Raises :class:`DrainTimeout`, naming the tasks left, after ``timeout``
    seconds. The test needs ``django_db(transaction=True)``.
    """
    return async_to_sync(adrain)(timeout)


async def adrain(timeout: float = 10.0) -> int:
    """Async twin of :func:`drain`."""
    await sync_to_async(check_not_atomic)()
    deadline = time.monotonic() + timeout
    consumers = _routed_consumers()
    ran = 0
    while True:
        tasks = await database_sync_to_async(_unfinished)()
        if not tasks:
            return ran
        if time.monotonic() > deadline:
            raise DrainTimeout(_left(timeout, tasks, consumers))
        runnable = [
            t for t in tasks if t.status != Status.RUNNING and t.channel in consumers
        ]
        for task in runnable:
            try:
                await arun_stored(consumers[task.channel], task)
            except AttemptNotRun:
                continue  # a worker took it: it is waited for like a running one
            ran += 1
        if not runnable:
            await asyncio.sleep(0.05)


def _unfinished() -> list[TaskRecord]:
    return list(TaskRecord.objects.filter(status__in=ACTIVE).order_by("created_at"))


def _routed_consumers() -> dict[str, type]:
    """Channel -> consumer class, from the ASGI application's channel router."""
    application, _ = load_application()
    routes = channel_routes(application) or {}
    return {
        channel: app.consumer_class
        for channel, app in routes.items()
        if hasattr(app, "consumer_class")
    }


def _left(timeout: float, tasks: list[TaskRecord], consumers: dict[str, Any]) -> str:
    lines = [
        f"  {t.id} {t.type} on {t.channel!r}: {t.status}, attempt {t.attempt}"
        + ("" if t.channel in consumers else " (no consumer is routed to it)")
        for t in tasks[:SHOWN_TASKS]
    ]
    more = len(tasks) - SHOWN_TASKS
    if more > 0:
        lines.append(f"  and {more} more")
    return f"{len(tasks)} task(s) unfinished after {timeout:g} s:\n" + "\n".join(lines)
