"""``DjangoTaskConsumer``: runs the ``django.tasks`` functions of ChannelsBackend.

Route every queue's channel to it and start ``runworker`` for those channels::

    from retrying_consumers.tasks_consumer import django_task_routes

    CHANNEL_ROUTES = {**django_task_routes(), ...}

An attempt imports the task by its module path and calls it: async functions in
the event loop, sync ones in a thread of their own (so that a long task never
holds up the worker's leases). Failures follow the consumer's ``retry_policy``,
capped by the task's ``max_attempts``; the task's ``backoff`` (or the backend's
``BACKOFF``) picks the delay of each retry or gives up. Django's
``task_started`` is sent as each attempt starts, ``task_finished`` once the task
has ended.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from inspect import iscoroutinefunction
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils import timezone

from .. import signals
from ..core.conf import library_settings
from ..core.exceptions import ConfigurationError, RetryLater
from ..core.policy import Action, Decision, RetryPolicy, retry_after_hint
from ..live.progress import ProgressReporter, current_reporter, make_progress
from ..models import TaskRecord
from ..running.mixin import RetryMixin
from ..running.outcomes import send_signal
from .tasks_backend import (
    DJANGO_TASK_TYPE,
    Backoff,
    ChannelsBackend,
    InvalidTaskData,
    is_django_task_type,
    json_safe,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsTaskContext(TaskContext):
    """Django's ``TaskContext`` (``attempt``, ``task_result``), plus progress."""

    reporter: ProgressReporter | None = field(default=None, repr=False, compare=False)

    def report_progress(
        self, current: float, total: float | None = None, message: str = ""
    ) -> None:
        """Show progress on the page and store it; never blocks (sync or async)."""
        progress = make_progress(current, total, message)
        if self.reporter is not None:
            self.reporter.update(progress)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The attempt a consumer instance is running, for ``decide_retry``."""

    task_id: str
    number: int
    result: TaskResult  # as the attempt started
    backoff: Backoff | None


class DjangoTaskConsumer(RetryMixin, AsyncConsumer):
    """Runs one attempt of a Django task per ``django.task.<module path>`` message.

    ``retry_policy`` is the default policy (five attempts, backoff from 10 s with
    jitter, a 300 s time limit); subclass to change it, and route the queues to
    the subclass. A return value that JSON cannot carry ends the task at once.
    """

    retry_policy = RetryPolicy(give_up_on=(InvalidTaskData,))
    store_results = True
    # Task functions are sync and run in threads: a few at a time per process.
    worker_concurrency = 4
    _attempt: _Attempt | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _announce_finished_for(cls)

    def handler_type(self, message_type: str) -> str:
        """Every ``django.task.<module path>`` runs with :meth:`django_task`."""
        if is_django_task_type(message_type):
            return DJANGO_TASK_TYPE
        return message_type

    def get_retry_policy(self, message_type: str) -> RetryPolicy:
        """The policy of the handler that runs ``message_type``."""
        return super().get_retry_policy(self.handler_type(message_type))

    def stores_result(self, message_type: str) -> bool:
        """Whether the handler that runs ``message_type`` stores its result."""
        return super().stores_result(self.handler_type(message_type))

    async def django_task(self, message: dict[str, Any]) -> Any:
        """Run the task function of ``message`` and return its JSON value."""
        self._attempt = None
        backend = backend_for(message["payload"].get("backend"))
        result = await backend.aget_result(message["task_id"])
        task = result.task
        self._attempt = _Attempt(
            message["task_id"],
            message["attempt"],
            result,
            getattr(task, "backoff", None) or backend.backoff,
        )
        await send_signal(task_started, type(backend), task_result=result)
        args = list(result.args)
        if task.takes_context:
            reporter = current_reporter.get()
            args.insert(0, ChannelsTaskContext(task_result=result, reporter=reporter))
        if iscoroutinefunction(task.func):
            value = await task.func(*args, **result.kwargs)
        else:
            value = await _in_thread(
                functools.partial(task.func, *args, **result.kwargs)
            )
        limit = library_settings().max_payload_bytes
        return json_safe({"return_value": value}, max_bytes=limit)["return_value"]

    def decide_retry(
        self, task: TaskRecord, error: BaseException, policy: RetryPolicy
    ) -> Decision:
        """Called after an attempt failed: the policy, then the task's ``backoff``.

        When the policy would retry (and the task did not raise ``RetryLater``),
        ``backoff(error, task_result)`` is called with the result as failed by
        this attempt; it returns the seconds (or a timedelta) to wait, or None to
        give up. It runs in the event loop, so it must be quick and not touch
        the database. If it raises or returns something else, that is logged at
        CRITICAL and the policy decides. A ``backoff`` that takes a third
        argument gets the server's ``Retry-After`` as seconds (found on the
        error by :func:`~retrying_consumers.policy.retry_after_hint`, capped at
        the policy's ``max_retry_after``), or None when the error carries none
        or the policy does not ``honour_retry_after``.
        """
        decision = super().decide_retry(task, error, policy)
        attempt = self._attempt
        if (
            decision.action is not Action.RETRY
            or isinstance(error, RetryLater)
            or attempt is None
            or (attempt.task_id, attempt.number) != (str(task.id), task.attempt)
            or attempt.backoff is None
        ):
            return decision
        result = failed(attempt.result, error)
        if not takes_retry_after(attempt.backoff):
            return backoff_decision(attempt.backoff(error, result))
        hint = None
        if policy.honour_retry_after:
            hint = retry_after_hint(error, timezone.now())
        if hint is not None:
            hint = min(hint, policy.max_retry_after)
        return backoff_decision(attempt.backoff(error, result, hint))


def takes_retry_after(backoff: Callable[..., Any]) -> bool:
    """Whether ``backoff`` takes a third argument, the Retry-After seconds."""
    try:
        inspect.signature(backoff).bind(None, None, None)
    except (TypeError, ValueError):  # two arguments, or no signature to read
        return False
    return True


def backend_for(alias: Any) -> ChannelsBackend:
    """The ChannelsBackend named ``alias`` in ``settings.TASKS``."""
    backend = task_backends[alias]
    if not isinstance(backend, ChannelsBackend):
        raise ConfigurationError(f"TASKS[{alias!r}] is not a ChannelsBackend")
    return backend


def failed(result: TaskResult, error: BaseException) -> TaskResult:
    """``result`` as the failure ``error`` of its running attempt leaves it."""
    cls = type(error)
    return replace(
        result,
        status=TaskResultStatus.FAILED,
        finished_at=timezone.now(),
        errors=[
            *result.errors,
            TaskError(
                exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
                traceback="".join(traceback.format_exception(error)),
            ),
        ],
    )


def backoff_decision(value: Any) -> Decision:
    """The decision that a ``backoff`` return value asks for."""
    if value is None:
        return Decision(Action.GIVE_UP, None, "backoff() returned None")
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds < math.inf
    ):
        raise ValueError(
            f"backoff() must return seconds >= 0, a timedelta or None, not {value!r}"
        )
    return Decision(Action.RETRY, float(seconds), f"backoff() {seconds:g} s")


async def _in_thread(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread of its own, not the worker's one database thread.

    A thread cannot be stopped: if the attempt is cancelled (time limit, worker
    shutdown), it still ends when the function returns, as a sync consumer's
    does; a second cancellation ends it at once.
    """
    job = asyncio.ensure_future(_caught(call))
    try:
        raised, value = await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        if not job.cancelled():
            job.exception()  # retrieved: the cancellation is what is reported
        raise
    if raised:
        raise value
    return value


async def _caught(call: Callable[[], Any]) -> tuple[bool, Any]:
    """(False, what ``call`` returned) or (True, what it raised).

    A ``SystemExit`` raised out of a task of its own would stop the worker's
    event loop; returned here, it is raised again in the attempt, which
    records it as a failed attempt.
    """
    try:
        return False, await database_sync_to_async(call, thread_sensitive=False)()
    except asyncio.CancelledError:
        raise
    except BaseException as err:
        return True, err


async def _announce_finished(sender: Any, task: TaskRecord, **kwargs: Any) -> None:
    """Send Django's ``task_finished`` once a Django task has ended."""
    if not is_django_task_type(task.type):
        return
    backend = backend_for(task.payload.get("backend"))
    result = await backend.aget_result(str(task.id))
    await send_signal(task_finished, type(backend), task_result=result)


def _announce_finished_for(sender: type) -> None:
    """Have ``sender``'s final outcomes announced as Django's ``task_finished``.

    Connected per sender, not for all of them: every success of every other
    consumer would otherwise run the receiver, for nothing.
    """
    for signal in (signals.task_succeeded, signals.task_dead, signals.task_discarded):
        signal.connect(_announce_finished, sender, dispatch_uid="django-task-finished")


_announce_finished_for(DjangoTaskConsumer)
# The scheduler's outcomes of lost workers, when no consumer is routed to the
# task's channel in the process that finds it.
_announce_finished_for(object)


def django_task_routes(
    consumer: type[DjangoTaskConsumer] = DjangoTaskConsumer,
) -> dict[str, Any]:
    """Channel routes for every queue of every ChannelsBackend in ``TASKS``."""
    application = consumer.as_asgi()
    return {
        queue: application
        for backend in task_backends.all()
        if isinstance(backend, ChannelsBackend)
        for queue in sorted(backend.queues)
    }
