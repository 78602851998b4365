"""Django tasks that the tests enqueue on ChannelsBackend and workers run.

Module level, so that a worker process finds them by their module path.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.tasks import TaskContext, TaskResult, default_task_backend, task

from retrying_consumers.exceptions import RetryLater


class Boom(Exception):
    """The failure that these tasks provoke."""


def quick_backoff(exception: BaseException, task_result: TaskResult) -> float:
    """A short, fixed delay, so that retries through real workers are fast."""
    return 0.1


def no_retry(exception: BaseException, task_result: TaskResult) -> None:
    return None


def bad_backoff(exception: BaseException, task_result: TaskResult) -> str:
    return "soon"


#: What backoff() was called with, by the tasks that record it.
backoff_calls: list[tuple[BaseException, TaskResult]] = []


def recording_backoff(exception: BaseException, task_result: TaskResult) -> float:
    backoff_calls.append((exception, task_result))
    return 0.1


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
async def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True, max_attempts=3, backoff=quick_backoff)
def flaky(context: TaskContext, fail_times: int, value: Any) -> dict[str, Any]:
    """Fail the first ``fail_times`` attempts, reporting progress on the last."""
    if context.attempt <= fail_times:
        raise Boom(f"attempt {context.attempt}")
    context.report_progress(1, 1, "done")
    return {"value": value, "attempt": context.attempt}


@task(max_attempts=2, backoff=quick_backoff)
def doomed() -> None:
    raise Boom("always")


@task(max_attempts=3, backoff=recording_backoff)
def recorded() -> None:
    raise Boom("recorded")


@task(max_attempts=5, backoff=no_retry)
def once() -> None:
    raise Boom("once")


@task(max_attempts=5, backoff=bad_backoff)
def badly_backed_off() -> None:
    raise Boom("bad backoff")


@task(max_attempts=3, backoff=quick_backoff)
def later() -> None:
    raise RetryLater(600)


@task
def returns_object() -> object:
    return object()


@task(takes_context=True)
def introspect(context: TaskContext) -> dict[str, Any]:
    """What the running task sees of itself, in the context and in the store."""
    stored = default_task_backend.get_result(context.task_result.id)
    return {
        "attempt": context.attempt,
        "status": context.task_result.status,
        "stored_status": stored.status,
        "worker_ids": stored.worker_ids,
    }


@task(takes_context=True)
async def async_progress(context: TaskContext, steps: int) -> int:
    for step in range(1, steps + 1):
        context.report_progress(step, steps, f"step {step}")
    return steps


@task
def sleeper(seconds: float) -> None:
    time.sleep(seconds)  # work that takes this long, not a wait for timing


#: Set by a test once it has seen ``blocker`` running.
release = threading.Event()


@task
def blocker() -> bool:
    """Wait until the test releases it; True if it did within 10 s."""
    return release.wait(10)


@task(max_attempts=2, backoff=quick_backoff)
def exits() -> None:
    raise SystemExit(4)


@task
def huge(size: int) -> str:
    return "x" * size


class Throttled(Exception):
    """A server's refusal that says when to come back, as HTTP clients raise it."""

    def __init__(self, retry_after: str) -> None:
        super().__init__("429 Too Many Requests")
        self.headers = {"Retry-After": retry_after}


#: The ``retry_after`` that ``hinted_backoff`` was called with.
retry_after_calls: list[float | None] = []


def hinted_backoff(
    exception: BaseException, task_result: TaskResult, retry_after: float | None
) -> float:
    retry_after_calls.append(retry_after)
    return 2 * retry_after if retry_after is not None else 0.1


@task(max_attempts=3, backoff=hinted_backoff)
def throttled(retry_after: str) -> None:
    raise Throttled(retry_after)


@task(max_attempts=3, backoff=recording_backoff)
def throttled_two_argument_backoff() -> None:
    raise Throttled("7")
