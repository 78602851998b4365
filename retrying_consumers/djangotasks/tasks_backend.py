"""A ``django.tasks`` backend whose tasks run on Channels workers, with retries.

::

    TASKS = {
        "default": {
            "BACKEND": "retrying_consumers.tasks_backend.ChannelsBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"MAX_ATTEMPTS": 5},
        }
    }

Each queue is a worker channel, served by
:class:`~retrying_consumers.tasks_consumer.DjangoTaskConsumer`. An enqueued task
is a :class:`~retrying_consumers.models.TaskRecord` of type
``django.task.<module path>`` whose payload holds its arguments, so it has the
guarantees, the page, the admin and the commands of every other task. Results
are read back from the record and its attempts.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskError
from django.tasks.exceptions import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
)
from django.tasks.signals import task_enqueued
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from ..core import exceptions
from ..core.conf import library_settings
from ..core.exceptions import InvalidArgument, InvalidPayload, TaskNotFound
from ..core.payload import check_nesting, shown, validate_payload
from ..models import AttemptRecord, Status, TaskRecord
from ..producing import producer
from ..running.eager import arun_stored, check_not_atomic
from ..running.outcomes import send_signal
from ..storage import store

logger = logging.getLogger("retrying_consumers.django_tasks")

#: The message type of Django tasks; ``DjangoTaskConsumer.django_task`` runs them.
#: A task is stored as ``django.task.<module path>`` (see :func:`django_task_type`).
DJANGO_TASK_TYPE = "django.task"


def django_task_type(module_path: str) -> str:
    """The stored type of the task at ``module_path``, which names the function:
    ``django.task.myapp.tasks.send_welcome``, filtered on like any type. A path
    that no type can hold (not ASCII, or too long) gives ``django.task``."""
    kind = f"{DJANGO_TASK_TYPE}.{module_path}"
    return kind if producer.MESSAGE_TYPE.fullmatch(kind) else DJANGO_TASK_TYPE


def is_django_task_type(kind: str) -> bool:
    """Whether ``kind`` is the type of a Django task (``django.task[.<path>]``)."""
    return kind == DJANGO_TASK_TYPE or kind.startswith(f"{DJANGO_TASK_TYPE}.")


#: ``backoff(exception, task_result[, retry_after])``: seconds (or a timedelta)
#: before the next attempt, or None to give up. ``retry_after``, if taken, is the
#: server's Retry-After in seconds, or None.
Backoff = Callable[..., float | timedelta | None]

OPTIONS = ("MAX_ATTEMPTS", "BACKOFF", "EAGER")

STATUSES = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.RETRYING: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.DEAD: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}


class InvalidTaskData(InvalidPayload, TypeError):
    """Task arguments or a return value that cannot round-trip through JSON.

    A ``TypeError``, as Django documents for such arguments, that names the
    offending value, e.g. ``task['args'][0]: datetime is not msgpack/JSON safe``.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsTask(Task):
    """A Django ``Task`` with retry options: ``@task(max_attempts=5, backoff=f)``.

    ``max_attempts`` is the most executions, the first included (None: the
    backend's ``MAX_ATTEMPTS``, else the consumer's policy). ``backoff`` is called
    with the exception and the failed ``TaskResult`` after an attempt that the
    policy would retry; it returns the seconds to wait, or None to give up.
    Neither can be changed with ``using()``. :meth:`owned_by` gives the tasks
    it enqueues an owner, who may watch them on the page.
    """

    max_attempts: int | None = None
    backoff: Backoff | None = None
    owner_id: Any = None

    def owned_by(self, user: Any) -> ChannelsTask:
        """A copy whose enqueued tasks belong to ``user``, as ``enqueue(user=)``.

        ``send_welcome.owned_by(request.user).enqueue(user_id=7)``: the owner
        may watch the task on the page and over the websocket. ``user`` is a
        saved user, or None or an ``AnonymousUser`` for nobody; anything else
        raises ``InvalidArgument`` here, and a user deleted since, at enqueue.
        """
        return replace(self, owner_id=producer.owner_id(user))


class ChannelsBackend(BaseTaskBackend):
    """Django tasks as durable, retried tasks on Channels worker channels.

    ``QUEUES`` are channel names (each must be routed to ``DjangoTaskConsumer``);
    empty, any channel name is a valid queue name.
    ``OPTIONS``: ``MAX_ATTEMPTS`` (default for tasks that set none) and
    ``BACKOFF`` (a callable or its dotted path: the default ``backoff``);
    ``EAGER: True`` runs each task at enqueue, in the caller, for tests (see
    :meth:`enqueue`).
    Channels has no priorities, so ``priority`` other than 0 is refused.
    """

    task_class = ChannelsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False  # a channel is first in, first out

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        _check_queues(alias, params.get("QUEUES", [DEFAULT_TASK_QUEUE_NAME]))
        super().__init__(alias, params)
        self.max_attempts, self.backoff = _backend_options(alias, self.options)
        self.eager = _eager_option(alias, self.options)

    def validate_task(self, task: Task) -> None:
        """Django's checks (the queue is one of QUEUES), and sane retry options."""
        # Django's own checks fail with raw errors on these.
        problem = _queue_problem(task.queue_name) or _run_after_problem(task.run_after)
        if problem:
            raise InvalidTask(problem)
        super().validate_task(task)
        problem = _retry_problem(
            getattr(task, "max_attempts", None), getattr(task, "backoff", None)
        )
        if problem:
            raise InvalidTask(problem)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Store the task; its channel is rung when the transaction commits.

        The result is the task as stored, READY: a worker may already be running
        it by the time this returns. With ``EAGER``, the task runs here and now
        through ``DjangoTaskConsumer`` and its policy, retries without their
        waits (``run_after`` is not waited for either), and the result is its
        final state; the caller must not be in a transaction.
        """
        self.validate_task(task)
        fields = self._fields(task, args, kwargs)
        if self.eager:
            check_not_atomic()
            record = store.create_task(**fields)[0]
        else:
            record = producer.submit(fields)
        result = self._result(record, [], task)
        for receiver, response in task_enqueued.send_robust(
            type(self), task_result=result
        ):
            if isinstance(response, Exception):
                logger.error(
                    "task_enqueued receiver %r raised", receiver, exc_info=response
                )
        if self.eager:
            async_to_sync(self._arun_eagerly)(record)
            return self.get_result(result.id)
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Async twin of :meth:`enqueue` (it rings at once)."""
        self.validate_task(task)
        fields = self._fields(task, args, kwargs)
        if self.eager:
            await sync_to_async(check_not_atomic)()
            record = (await database_sync_to_async(store.create_task)(**fields))[0]
        else:
            record = await producer.asubmit(fields)
        result = self._result(record, [], task)
        await send_signal(task_enqueued, type(self), task_result=result)
        if self.eager:
            await self._arun_eagerly(record)
            return await self.aget_result(result.id)
        return result

    async def _arun_eagerly(self, record: TaskRecord) -> None:
        from .tasks_consumer import DjangoTaskConsumer  # it imports this module

        await arun_stored(DjangoTaskConsumer, record)

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as stored now, or ``TaskResultDoesNotExist``."""
        try:
            record = store.get_task(result_id)
        except TaskNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        if (
            not is_django_task_type(record.type)
            or record.payload.get("backend") != self.alias
        ):
            raise TaskResultDoesNotExist(result_id)
        attempts = list(AttemptRecord.objects.filter(task=record).order_by("number"))
        return self._result(record, attempts, self._task_of(record))

    async def aget_result(self, result_id: str) -> TaskResult:
        """Async twin of :meth:`get_result`."""
        return await database_sync_to_async(self.get_result)(result_id)

    def _fields(self, task: Task, args: Any, kwargs: Any) -> dict[str, Any]:
        """The producer's checked fields for ``task`` called with ``args``, ``kwargs``.

        Raises ``InvalidTaskData`` for arguments JSON cannot carry, or too big.
        """
        found = _import_task(task.module_path)
        if found is None or found.func is not task.func:
            raise InvalidTask(
                f"{task.module_path!r} must be the Task itself, so that workers "
                "can import it (decorate the module-level function with @task)."
            )
        limit = library_settings().max_payload_bytes
        values = {"args": list(args), "kwargs": dict(kwargs)}
        run_after = task.run_after
        payload = {
            "module_path": task.module_path,
            "backend": self.alias,
            "run_after": run_after.isoformat() if run_after else None,
            **json_safe(values, max_bytes=limit),
        }
        try:
            return producer.prepare(
                task.queue_name,
                django_task_type(task.module_path),
                payload,
                max_attempts=getattr(task, "max_attempts", None) or self.max_attempts,
                run_after=run_after,
            ) | {"owner_id": getattr(task, "owner_id", None)}
        except InvalidPayload as err:  # the whole payload is over the limit
            path = "task" + err.path.removeprefix("payload")
            raise InvalidTaskData(path, err.problem) from None
        except InvalidArgument as err:
            raise InvalidTask(str(err)) from err

    def _task_of(self, record: TaskRecord) -> Task:
        """The Task of a stored record, as it was enqueued (queue, run_after,
        owner)."""
        path = record.payload["module_path"]
        found = _import_task(path)
        if found is None:
            raise ValueError(f"Expected {path!r} to point to a Task instance.")
        run_after = record.payload.get("run_after")
        changes = {
            "queue_name": record.channel,
            "backend": self.alias,
            "run_after": datetime.fromisoformat(run_after) if run_after else None,
        }
        if isinstance(found, ChannelsTask):
            changes["owner_id"] = record.owner_id
        if any(getattr(found, name) != value for name, value in changes.items()):
            found = replace(found, **changes)
        return found

    def _result(
        self, record: TaskRecord, attempts: list[AttemptRecord], task: Task
    ) -> TaskResult:
        result = TaskResult(
            task=task,
            id=str(record.id),
            status=STATUSES[Status(record.status)],
            enqueued_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at if record.is_final else None,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=record.payload["args"],
            kwargs=record.payload["kwargs"],
            backend=self.alias,
            errors=[task_error(a) for a in attempts if a.error_class],
            worker_ids=[a.worker for a in attempts],
        )
        if record.status == Status.SUCCEEDED:
            object.__setattr__(result, "_return_value", record.result)
        return result


def _import_task(path: str) -> Any:
    """The Task that ``path`` names (as workers find it), or None."""
    try:
        found = import_string(path)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


def task_error(attempt: AttemptRecord) -> TaskError:
    """Django's view of a failed attempt: the exception's class path, traceback."""
    return TaskError(
        exception_class_path=exception_path(attempt.error_class, attempt.traceback),
        traceback=attempt.traceback
        or f"{attempt.error_class}: {attempt.error_message}\n",
    )


def exception_path(name: str, traceback: str) -> str:
    """The import path of exception class ``name`` (a qualname) from its traceback.

    The store keeps the class's qualname; the last line of a traceback names the
    class with its module (except for built-ins), as ``pkg.mod.Name: message``.
    """
    header = re.compile(rf"^(?:([\w.]+)\.)?{re.escape(name)}(?::|$)", re.MULTILINE)
    modules = [match.group(1) for match in header.finditer(traceback)]
    if modules and modules[-1]:
        return f"{modules[-1]}.{name}"
    for module in (builtins, exceptions):
        if isinstance(found := getattr(module, name, None), type):
            return f"{found.__module__}.{name}"
    return name


def json_safe(
    values: dict[str, Any], *, max_bytes: int | None = None
) -> dict[str, Any]:
    """``values`` as a JSON round trip gives them back (tuples become lists).

    Raises :class:`InvalidTaskData` naming what JSON cannot carry, e.g.
    ``task['args'][0]``, or (with ``max_bytes``) that it is too big.
    """
    try:
        # normalize_json recurses: bound its depth and its work first.
        check_nesting(values, "task", max_bytes)
        try:
            values = normalize_json(values)
        except (TypeError, ValueError):
            values = _lists(values)  # validate_payload names the offending part
        validate_payload(values, "task", max_bytes=max_bytes)
    except InvalidPayload as err:
        raise InvalidTaskData(err.path, err.problem) from None
    return values


def _lists(value: Any) -> Any:
    """Tuples as lists, at any depth: what they become after a JSON round trip."""
    if isinstance(value, tuple | list):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def _queue_problem(queue_name: Any) -> str | None:
    if isinstance(queue_name, str) and producer.CHANNEL_NAME.fullmatch(queue_name):
        return None
    return (
        f"queue_name {shown(queue_name)} is not a channel name (ASCII letters, "
        "digits, '-', '_' and '.', under 100 characters)."
    )


def _run_after_problem(run_after: Any) -> str | None:
    if run_after is None:
        return None
    if not isinstance(run_after, datetime):
        return f"run_after must be an aware datetime, got {shown(run_after)}."
    try:
        producer.utc_run_after(run_after)
    except InvalidArgument as err:
        return f"run_after {err.problem}."
    return None


def _retry_problem(
    max_attempts: Any,
    backoff: Any,
    names: tuple[str, str] = ("max_attempts", "backoff"),
) -> str | None:
    try:
        producer.validate_max_attempts(max_attempts)
    except InvalidArgument as err:
        return f"{names[0]} {err.problem}."
    if backoff is not None and not callable(backoff):
        return (
            f"{names[1]} must be a callable (exception, task_result) -> "
            f"seconds or None, got {backoff!r}."
        )
    return None


def _check_queues(alias: str, queues: Any) -> None:
    """Raise InvalidTaskBackend unless QUEUES is a list of channel names.

    An empty list is valid: Django documents it as "any queue name".
    """
    where = f"TASKS[{alias!r}]['QUEUES']"
    if not isinstance(queues, list | tuple | set | frozenset):
        raise InvalidTaskBackend(
            f"{where} must be a list of channel names, got {shown(queues)}."
        )
    bad = sorted(shown(q) for q in queues if _queue_problem(q))
    if bad:
        raise InvalidTaskBackend(
            f"{where}: {', '.join(bad)} are not channel names (ASCII "
            "letters, digits, '-', '_' and '.', under 100 characters)."
        )


def _eager_option(alias: str, options: Any) -> bool:
    """``OPTIONS['EAGER']``: True or False (the default)."""
    eager = options.get("EAGER", False)
    if not isinstance(eager, bool):
        raise InvalidTaskBackend(
            f"TASKS[{alias!r}]['OPTIONS']['EAGER'] must be True or False, "
            f"got {eager!r}."
        )
    return eager


def _backend_options(alias: str, options: Any) -> tuple[int | None, Backoff | None]:
    """Check OPTIONS; return the default max_attempts and backoff."""
    where = f"TASKS[{alias!r}]"
    if not isinstance(options, Mapping) or set(options) - set(OPTIONS):
        raise InvalidTaskBackend(
            f"{where}['OPTIONS'] may only have {', '.join(OPTIONS)}, got {options!r}."
        )
    backoff = options.get("BACKOFF")
    if isinstance(backoff, str):
        try:
            backoff = import_string(backoff)
        except ImportError as err:
            raise InvalidTaskBackend(f"{where}['OPTIONS']['BACKOFF']: {err}") from err
    max_attempts = options.get("MAX_ATTEMPTS")
    names = (f"{where}['OPTIONS']['MAX_ATTEMPTS']", f"{where}['OPTIONS']['BACKOFF']")
    problem = _retry_problem(max_attempts, backoff, names)
    if problem:
        raise InvalidTaskBackend(problem)
    return max_attempts, backoff
